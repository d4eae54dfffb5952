"""Quiet ends for Ray worker processes.

When Ray stops a worker (at the end of a study, `ray.shutdown()`), its SIGTERM handler raises
SystemExit wherever the worker's Python happens to be. Inside a finaliser or weakref callback
Python cannot raise it, ignores it and prints "Exception ignored ... SystemExit" with a
traceback into the user's terminal, although nothing went wrong.
"""

from __future__ import annotations

import sys
from typing import Any


def silence_ignored_exits() -> None:
    """In this process, print nothing for a SystemExit that Python had to ignore (raised in a
    finaliser or callback); every other ignored exception is reported as before."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_exit", False):
        return

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            previous(unraisable)

    hook.drops_exit = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
