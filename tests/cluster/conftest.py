"""Real servers for cluster tests, started once per test module on 127.0.0.1 with free ports
(one module uses them: they stop as soon as it is done, not at the end of the whole suite).

PostgreSQL (password authentication over TCP), `mlflow server` on it with proxied artifacts, and
a Ray head with its dashboard (the job API), started with the shared-storage URLs in its
environment the way cluster.yaml starts the head. Missing PostgreSQL binaries skip these tests
locally but fail them when GMP_REQUIRE_SERVERS is set (CI sets it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.driver import MLFLOW_URI_ENV, OPTUNA_URL_ENV

REQUIRE_SERVERS_ENV = "GMP_REQUIRE_SERVERS"
PG_BINARIES = ("initdb", "pg_ctl", "postgres")
PG_USER = "gmp"
START_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: on PATH, else Debian's versioned folder."""
    on_path = [shutil.which(name) for name in PG_BINARIES]
    if all(on_path):
        return Path(on_path[0]).resolve().parent
    debian = [Path(f) for f in glob.glob("/usr/lib/postgresql/*/bin")]
    for folder in sorted(debian, key=lambda f: int(f.parent.name), reverse=True):
        if all((folder / name).is_file() for name in PG_BINARIES):
            return folder
    return None


def _as_server_user() -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: as root, the command prefix that runs a program as
    an unprivileged account (and that account); otherwise nothing."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if runuser is None:
            pytest.fail("running as root without `runuser` to start PostgreSQL as another user")
        return [runuser, "-u", name, "--"], name
    pytest.fail("running as root with neither a 'postgres' nor a 'nobody' account")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        problem = None
        if process.poll() is not None:
            problem = f"{what} exited with {process.returncode} while starting"
        elif time.monotonic() > deadline:
            problem = f"{what} did not start within {START_TIMEOUT_S} s"
        if problem:
            pytest.fail(f"{problem}; its log ends:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_group(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, and every process it started (a blocking
    `ray start` does not exit on SIGTERM: what is left after a few seconds is killed)."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL: role `gmp` with a password, reachable on 127.0.0.1:port."""

    port: int
    password: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of one database, password included."""
        return f"postgresql+psycopg://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"


@dataclass(frozen=True)
class RayHead:
    """A running Ray head: GCS address for drivers, dashboard URL for the job API, and the
    environment a client needs to pass its token authentication."""

    gcs_address: str
    dashboard: str
    token_file: Path

    @property
    def client_env(self) -> dict[str, str]:
        """Environment variables under which Ray clients authenticate to this head."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that authenticate a request to this head's dashboard."""
        return {"Authorization": f"Bearer {self.token_file.read_text()}"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temporary folder, databases `optuna` and `mlflow`."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = f"PostgreSQL binaries ({', '.join(PG_BINARIES)}) not found"
        if os.environ.get(REQUIRE_SERVERS_ENV):
            pytest.fail(f"{message}, and {REQUIRE_SERVERS_ENV} is set")
        pytest.skip(f"{message}; set {REQUIRE_SERVERS_ENV}=1 to make this a failure")
    import psycopg

    as_user, user = _as_server_user()
    # A short folder outside pytest's private tmp: the server's account must reach it, and the
    # Unix socket path must stay under ~100 characters.
    folder = Path(tempfile.mkdtemp(prefix="gmp-pg-", dir="/tmp"))
    password = secrets.token_hex(12)
    (folder / "pw").write_text(password)
    if user:
        shutil.chown(folder, user)
        shutil.chown(folder / "pw", user)
    port = free_port()
    data = folder / "data"
    server = Postgres(port=port, password=password)
    try:
        _run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "-E", "UTF8",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={folder / 'pw'}",
             "--no-sync"]
        )  # fmt: skip
        _run(
            [*as_user, str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "120",
             "-l", str(folder / "server.log"), "-o", f"-h 127.0.0.1 -p {port} -k {folder}"]
        )  # fmt: skip
        with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as c:
            for database in ("optuna", "mlflow"):
                c.execute(f"CREATE DATABASE {database}")
        yield server
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres) -> Iterator[str]:
    """`mlflow server` on PostgreSQL with proxied artifacts; its http:// tracking URI."""
    folder = Path(tempfile.mkdtemp(prefix="gmp-mlflow-"))
    port = free_port()
    # The backend URL (with its password) goes in through the environment, not the command line.
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": postgres.url("mlflow"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job runners
    }
    log_file = folder / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--serve-artifacts",
             "--artifacts-destination", (folder / "artifacts").as_uri()],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _http_ok(f"{uri}/health"), "mlflow server", process, log_file)
        yield uri
    finally:
        _stop_group(process)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(postgres: Postgres, mlflow_server: str) -> Iterator[RayHead]:
    """`ray start --head` on 127.0.0.1 with 2 CPUs and the dashboard (job API) on 127.0.0.1.

    Its environment carries the storage URLs, as on a cluster head (cluster.yaml), and token
    authentication with its own token; its own temp folder keeps other Ray users on this
    machine from finding it."""
    temp_dir = Path(tempfile.mkdtemp(prefix="gmp-ray-", dir="/tmp"))
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    gcs_port, dashboard_port = free_port(), free_port()
    head = RayHead(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", token)
    env = {
        **os.environ,
        **head.client_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        OPTUNA_URL_ENV: postgres.url("optuna"),
        MLFLOW_URI_ENV: mlflow_server,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).parent / "ray")
    log_file = temp_dir / "start.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--port", str(gcs_port), "--include-dashboard", "true",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
             "--dashboard-agent-listen-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()),
             "--metrics-export-port", str(free_port()),
             "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(temp_dir),
             "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        version = f"{head.dashboard}/api/version"
        _wait_until(lambda: _http_ok(version, head.headers), "ray head", process, log_file)
        yield head
    finally:
        _stop_group(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
