"""Real servers for cluster tests, started once per test module on 127.0.0.1 with free ports
(one module uses them: they stop as soon as it is done, not at the end of the whole suite).

PostgreSQL (password authentication over TCP), `mlflow server` on it with proxied artifacts, and
a Ray head with its dashboard (the job API), started with the shared-storage URLs in its
environment the way cluster.yaml starts the head. Missing PostgreSQL binaries skip these tests
locally but fail them when GMP_REQUIRE_SERVERS is set (CI sets it).

`ray_cluster` is a multi-node Ray cluster on this machine: a head without CPUs (as in
cluster.yaml) and worker nodes, each a `ray start` of its own whose processes can be killed
together, as when a machine is lost; it needs nothing but Ray, so it never skips.
"""

from __future__ import annotations

import contextlib
import glob
import json
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
from storage.optuna_storage import PASSWORD_ENV

REQUIRE_SERVERS_ENV = "GMP_REQUIRE_SERVERS"
PG_BINARIES = ("initdb", "pg_ctl", "postgres")
PG_USER = "gmp"
START_TIMEOUT_S = 240
OBJECT_STORE_BYTES = 100 * 1024**2  # trials pass small results: keep shared memory small
# A lost node is declared dead after 3 missed health checks 1 s apart (Ray's default: 5, 3 s
# apart), so that a test of a lost node does not wait for Ray's default detection time.
FAST_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


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


def ray_token(folder: Path) -> Path:
    """A fresh Ray authentication token in `folder` (mode 600): the cluster's shared secret."""
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    return token


@dataclass
class RayNode:
    """One `ray start --block` process in its own session: the node's GCS (head only), raylet
    and worker processes all belong to that session, so killing its process group loses the
    whole node at once, as when a machine goes away."""

    name: str
    process: subprocess.Popen
    log_file: Path

    def owns(self, pid: int) -> bool:
        """Whether process `pid` runs on this node (is in the node's session)."""
        try:
            return os.getsid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """`kill -9` of every process of the node (its session: Ray puts some workers in
        process groups of their own), until none runs; returns once `ray start` is reaped."""
        deadline = time.monotonic() + 30
        while members := [pid for pid in _running_pids() if self.owns(pid)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name}: processes {members} outlived kill -9")
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        self.process.wait(30)

    def stop(self) -> None:
        """Stop the node and every process it started."""
        _stop_group(self.process)


def start_ray_node(name: str, folder: Path, env: dict[str, str], options: list[str]) -> RayNode:
    """`ray start --block` on 127.0.0.1 with free ports, `options` added (head or address,
    resources), `folder` (new: Unix socket paths in it must stay short) as its temp folder;
    waits for nothing."""
    folder.mkdir(parents=True)
    ray = str(Path(sys.executable).parent / "ray")
    log_file = folder / "start.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [ray, "start", "--block", "--node-ip-address", "127.0.0.1",
             "--dashboard-agent-listen-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()),
             "--metrics-export-port", str(free_port()),
             "--num-gpus", "0", "--object-store-memory", str(OBJECT_STORE_BYTES),
             "--temp-dir", str(folder), "--disable-usage-stats", *options],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return RayNode(name, process, log_file)


INHERITED_CREDENTIALS = {PASSWORD_ENV, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
"""Set in a process by a driver that moved them out of its storage URLs; a node gets its own."""


def ray_node_env(head: RayHead, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `ray start` for `head`'s cluster: its token, this Python's `ray`,
    and none of the storage credentials that in-process tests may have left in this process."""
    inherited = {k: v for k, v in os.environ.items() if k not in INHERITED_CREDENTIALS}
    env = {
        **inherited,
        **head.client_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        **(extra or {}),
    }
    env.pop("RAY_ADDRESS", None)
    return env


def start_head(
    head: RayHead, temp_dir: Path, env: dict[str, str], num_cpus: int, name: str = "head"
) -> RayNode:
    """The head node of `head` (GCS on its port, dashboard with the job API), up and answering."""
    gcs_port = head.gcs_address.rsplit(":", 1)[1]
    dashboard_port = head.dashboard.rsplit(":", 1)[1]
    node = start_ray_node(
        name, temp_dir / name, env,
        ["--head", "--port", gcs_port, "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", dashboard_port,
         "--ray-client-server-port", str(free_port()), "--num-cpus", str(num_cpus)],
    )  # fmt: skip
    version = f"{head.dashboard}/api/version"
    _wait_until(lambda: _http_ok(version, head.headers), "ray head", node.process, node.log_file)
    return node


@pytest.fixture(scope="module")
def ray_head(postgres: Postgres, mlflow_server: str) -> Iterator[RayHead]:
    """`ray start --head` on 127.0.0.1 with 2 CPUs and the dashboard (job API) on 127.0.0.1.

    Its environment carries the storage URLs, as on a cluster head (cluster.yaml), and token
    authentication with its own token; its own temp folder keeps other Ray users on this
    machine from finding it."""
    temp_dir = Path(tempfile.mkdtemp(prefix="gmp-ray-", dir="/tmp"))
    head = RayHead(
        f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", ray_token(temp_dir)
    )
    env = ray_node_env(
        head, {OPTUNA_URL_ENV: postgres.url("optuna"), MLFLOW_URI_ENV: mlflow_server}
    )
    node = start_head(head, temp_dir, env, num_cpus=2)
    try:
        yield head
    finally:
        node.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class RayCluster:
    """A Ray cluster of real nodes on this machine: `head` and worker nodes by name, each with
    1 CPU and a custom resource named after it. Nodes can be killed and started again; a new
    head makes a new cluster (new ports, new token)."""

    temp_dir: Path
    workers: tuple[str, ...]
    head: RayHead | None = None
    nodes: dict[str, RayNode] | None = None

    def env(self) -> dict[str, str]:
        """Environment of this cluster's nodes and drivers (token, fast node-death detection)."""
        assert self.head is not None
        return ray_node_env(self.head, FAST_NODE_DEATH)

    def start(self) -> None:
        """A new head without CPUs (it runs drivers only) and every worker; waits until all
        are in the cluster."""
        temp = Path(tempfile.mkdtemp(prefix="c-", dir=self.temp_dir))
        self.head = RayHead(
            f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", ray_token(temp)
        )
        self.nodes = {"head": start_head(self.head, temp, self.env(), num_cpus=0)}
        for name in self.workers:
            self.start_worker(name)
        self.wait_for_nodes(1 + len(self.workers))

    def start_worker(self, name: str) -> RayNode:
        """Start worker node `name` (again, in a new folder): 1 CPU and the custom resource
        `name`."""
        assert self.head is not None and self.nodes is not None
        temp = self.head.token_file.parent
        starts = len(list(temp.glob(f"{name}*")))
        options = ["--address", self.head.gcs_address, "--num-cpus", "1"]
        options += ["--resources", f'{{"{name}": 1}}']
        self.nodes[name] = start_ray_node(name, temp / f"{name}{starts}", self.env(), options)
        return self.nodes[name]

    def alive_nodes(self) -> int:
        """How many nodes the head counts as alive (0 when its dashboard does not answer)."""
        assert self.head is not None
        request = urllib.request.Request(
            f"{self.head.dashboard}/api/v0/nodes?limit=100", headers=self.head.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                nodes = json.load(response)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(node["state"] == "ALIVE" for node in nodes)

    def wait_for_nodes(self, count: int) -> None:
        """Wait until `count` nodes are alive; fail with the nodes' logs if they do not come."""
        assert self.nodes is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.alive_nodes() < count:
            dead = [n for n in self.nodes.values() if n.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    f"{n.name}: {n.log_file.read_text(errors='replace')[-1500:]}"
                    for n in (dead or self.nodes.values())
                )
                pytest.fail(f"{count} Ray nodes not alive within {START_TIMEOUT_S} s:\n{logs}")
            time.sleep(0.5)

    def node_of(self, pid: int) -> str | None:
        """The name of the node that runs process `pid` (None: no node, or it is gone)."""
        assert self.nodes is not None
        return next((name for name, node in self.nodes.items() if node.owns(pid)), None)

    def stop(self) -> None:
        """Stop every node."""
        for node in (self.nodes or {}).values():
            node.stop()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head (no CPUs) and worker nodes `a` and `b` (1 CPU each), started with `ray start` on
    127.0.0.1 with token authentication, in a temp folder of their own."""
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="gmp-rayc-", dir="/tmp")), ("a", "b"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def _running_pids() -> list[int]:
    """The processes on this machine that have not ended (zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):  # ended meanwhile
                continue
            if state not in ("Z", "X"):
                found.append(int(entry.name))
    return found
