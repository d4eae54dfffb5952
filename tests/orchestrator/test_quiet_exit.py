"""A gmp process (a Ray worker stopped by SIGTERM inside a callback) ends without a traceback."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, sys, weakref

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
        import orchestrator  # what every gmp process, Ray's workers included, imports
        from orchestrator.quiet_exit import silence_ignored_exits
        installed = sys.unraisablehook
        silence_ignored_exits()
        assert sys.unraisablehook is installed  # installed on import; a second call adds none
    raise_in_callback(SystemExit(1))
    raise_in_callback(ValueError("a real problem"))
    print("still running")
    """
)


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )


def test_ignored_system_exit_prints_nothing_in_a_gmp_process():
    default = _run("default")
    assert "SystemExit" in default.stderr  # what Python prints without the hook
    silenced = _run("silenced")
    assert "SystemExit" not in silenced.stderr
    assert silenced.stdout.strip() == "still running"
    # every other ignored exception is still reported, once
    assert silenced.stderr.count("ValueError: a real problem") == 1
