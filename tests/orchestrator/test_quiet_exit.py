"""A Ray worker stopped by SIGTERM inside a callback ends without a traceback on the terminal."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, sys, weakref
    from orchestrator.quiet_exit import silence_ignored_exits

    class Holder:
        pass

    def raise_in_callback(error):
        holder = Holder()
        def callback(_):
            raise error
        ref = weakref.ref(holder, callback)
        del holder
        gc.collect()

    if sys.argv[1] == "silenced":
        silence_ignored_exits()
        silence_ignored_exits()  # a second call keeps one hook
    raise_in_callback(SystemExit(1))
    raise_in_callback(ValueError("a real problem"))
    print("still running")
    """
)


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )


def test_ignored_system_exit_prints_nothing_once_silenced():
    default = _run("default")
    assert "SystemExit" in default.stderr  # what Python prints without the hook
    silenced = _run("silenced")
    assert "SystemExit" not in silenced.stderr
    assert silenced.stdout.strip() == "still running"
    # every other ignored exception is still reported, once
    assert silenced.stderr.count("ValueError: a real problem") == 1
