"""Ctrl-C of a running study: Tune saves the experiment and stops; the driver says how to resume.

Tune's own SIGINT handler would print a `Tuner.restore(...)` hint that is no use to a `gmp` user;
this one records that the user interrupted, hands the stop to Tune (its SIGUSR1 handler saves
the experiment state and ends the run) and hides Tune's hint. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

RESUME_HINT = "interrupted; run the same command to resume"
TUNE_MESSAGES = ("Resume experiment with", "Stop signal received", "Trials did not complete")


class StudyInterruptedError(Exception):
    """The user interrupted the study (SIGINT); its state is saved and a rerun resumes it."""


class _HideTuneHints(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in TUNE_MESSAGES)


class InterruptWatch:
    """While entered (in the main thread): the first SIGINT sets `interrupted` and asks Tune
    to stop; a second one raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: object = None
        self._filter = _HideTuneHints()
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> InterruptWatch:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune leaves SIGINT to us
        logging.getLogger("ray.tune.tune").addFilter(self._filter)
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
        logging.getLogger("ray.tune.tune").removeFilter(self._filter)

    def check(self) -> None:
        """Raise StudyInterruptedError if the user interrupted."""
        if self.interrupted:
            raise StudyInterruptedError(RESUME_HINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print(
            "stopping: saving the study's state (Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's "save and stop" while it runs
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)
        else:
            raise KeyboardInterrupt
