"""Studies on Ray Tune: specs, the Optuna search, trial actors, IMR tasks and the CLI.

Importing the package applies the thread policy's OpenMP wait settings (orchestrator/threads.py)
before anything loads torch, so that every gmp process (the CLI, trial actors, IMR tasks) starts
its OpenMP threads with them.
"""

from orchestrator.threads import prepare_openmp

prepare_openmp()
