"""`gmp ui`: the MLflow UI and the Optuna dashboard (optuna-dashboard) over a records root.

Both servers run as child processes bound to the given host (127.0.0.1 by default), each on its
own port; both ports are checked before either starts, and Ctrl-C (or either server ending)
stops both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class PortTakenError(RuntimeError):
    """A port the UI needs is in use; the message names it and the option that changes it."""


@dataclass(frozen=True)
class Servers:
    """Where the two servers listen and what they serve."""

    host: str
    mlflow_port: int
    dashboard_port: int
    mlflow_uri: str
    mlflow_artifacts: str
    optuna_url: str

    def commands(self) -> list[list[str]]:
        """The child processes: the MLflow UI, then the Optuna dashboard."""
        mlflow = [
            sys.executable, "-m", "mlflow", "ui",
            "--backend-store-uri", self.mlflow_uri,
            "--default-artifact-root", self.mlflow_artifacts,
            "--host", self.host, "--port", str(self.mlflow_port),
        ]  # fmt: skip
        dashboard = [
            sys.executable, "-m", "orchestrator.ui",
            self.optuna_url, self.host, str(self.dashboard_port),
        ]  # fmt: skip
        return [mlflow, dashboard]


def check_ports(host: str, ports: dict[str, int]) -> None:
    """PortTakenError naming the first port of `ports` (option -> port) that cannot be bound."""
    for option, port in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as err:
                raise PortTakenError(
                    f"cannot serve on {host}:{port} ({err.strerror}); choose another with {option}"
                ) from None


def serve(servers: Servers) -> int:
    """Run both servers until Ctrl-C (or SIGTERM) or until one of them ends; returns that
    one's exit status (0 after Ctrl-C or SIGTERM)."""
    signal.signal(signal.SIGTERM, _stop)
    children = [
        subprocess.Popen(command, start_new_session=True) for command in servers.commands()
    ]  # each server in its own process group: stopping it stops the workers it started
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return next(child.returncode for child in children if child.returncode is not None)
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            _signal_group(child, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            _signal_group(child, signal.SIGKILL)  # workers that outlive the server (MLflow's)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    """Send `signum` to the process group that `child` leads (if it still exists)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def study_links(mlflow_uri: str, host: str, port: int) -> dict[str, str]:
    """Each study's runs in the MLflow UI: MLflow 3's UI opens an experiment on GenAI traces
    unless the link asks for the model-training view."""
    from mlflow.tracking import MlflowClient

    base = f"http://{host}:{port}/#/experiments"
    return {
        experiment.name: f"{base}/{experiment.experiment_id}/runs?workflowType=machine_learning"
        for experiment in MlflowClient(mlflow_uri).search_experiments()
        if experiment.name != "Default"
    }


def run_dashboard(optuna_url: str, host: str, port: int) -> None:
    """Serve optuna-dashboard over the Optuna storage at `optuna_url` (blocks)."""
    from optuna_dashboard import run_server

    from storage.optuna_storage import open_storage

    if optuna_url.startswith("sqlite:///") and not Path(optuna_url[10:]).is_file():
        raise SystemExit(f"no Optuna storage at {optuna_url}")
    run_server(open_storage(optuna_url), host=host, port=port)


if __name__ == "__main__":  # the dashboard's child process: URL HOST PORT
    with contextlib.suppress(KeyboardInterrupt):
        run_dashboard(sys.argv[1], sys.argv[2], int(sys.argv[3]))
