"""Studies on Ray Tune: specs, the Optuna search, trial actors, IMR tasks and the CLI.

Importing the package applies the thread policy's OpenMP wait settings (orchestrator/threads.py)
before anything loads torch, so that every gmp process (the CLI, trial actors, IMR tasks) starts
its OpenMP threads with them; it also keeps the SystemExit that Ray's SIGTERM handler raises in
a finaliser, when it stops a worker, from printing a traceback (orchestrator/quiet_exit.py).
"""

from orchestrator.quiet_exit import silence_ignored_exits
from orchestrator.threads import prepare_openmp

prepare_openmp()
silence_ignored_exits()
