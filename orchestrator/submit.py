"""`gmp study submit`: a study as a Ray job on a cluster, through Ray's job submission API.

The job ships its own code: a staged folder with the project's packages and the study file is
the job's `working_dir`, so the cluster runs exactly the code that submitted it. A target given
as `module:function` whose module (or package) lies beside the study file is shipped too, at the
folder's top, where the job's driver and workers import it. Storage URLs are
never part of the job: the driver on the cluster reads them from the study file (without
passwords, which are refused here) or from the head's environment (`GMP_OPTUNA_URL`,
`GMP_MLFLOW_URI`), so the job's entrypoint, metadata and runtime_env carry no secret.
"""

from __future__ import annotations

import asyncio
import importlib
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ray.exceptions import AuthenticationError
from ray.job_submission import JobSubmissionClient

from orchestrator.spec import StudySpec
from storage.optuna_storage import redact
from targets import plugins

PACKAGES = ("targets", "trainers", "orchestrator", "storage")
STUDY_DIR = "study"
CLUSTER_HOME = '"$HOME"'
_STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache")


class SubmitInputError(ValueError):
    """The study cannot be submitted as given (the message names the file and the reason)."""


class ClusterAccessError(RuntimeError):
    """The cluster's dashboard cannot be reached, or refuses this client (the message says why)."""


@dataclass(frozen=True)
class JobRequest:
    """What is sent to Ray's job API: entrypoint, runtime_env and metadata (no secrets)."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]


@dataclass(frozen=True)
class SubmittedJob:
    """A submitted job: its id and, when followed to its end, final status and exit code."""

    job_id: str
    status: str | None = None
    exit_code: int | None = None


def check_no_secrets(file: Path, text: str) -> None:
    """Refuse a study file that carries a URL password (it would travel with the job)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if redact(line) != line:
            raise SubmitInputError(
                f"{file}, line {number}: a URL with a password ({redact(line.strip())}); "
                "a submitted study file travels with the job, so keep passwords out of it: "
                "set GMP_OPTUNA_URL / GMP_MLFLOW_URI in the cluster head's environment instead "
                "(docs/cluster.md)"
            )


def cluster_root(spec: StudySpec, root: str | None) -> str:
    """The records folder on the cluster as a shell word: relative paths are under $HOME."""
    path = Path(root) if root is not None else spec.storage.root
    if path.is_absolute():
        return shlex.quote(str(path))
    return f"{CLUSTER_HOME}/{shlex.quote(str(path))}"


def target_module(spec: StudySpec, file: Path) -> Path | None:
    """The module file or package folder of the study's `module:function` target when it lies
    beside the study `file` (None otherwise, or when it would shadow one of gmp's packages)."""
    if not plugins.is_reference(spec.target.name):
        return None
    top = spec.target.name.partition(":")[0].split(".")[0]
    if top in PACKAGES:
        return None
    folder = file.resolve().parent
    package, module = folder / top, folder / f"{top}.py"
    if (package / "__init__.py").is_file():
        return package
    return module if module.is_file() else None


def stage_job(spec: StudySpec, file: Path, into: Path, root: str | None = None) -> JobRequest:
    """Copy the project's packages and the study file into `into`; the job that runs it there."""
    for package in PACKAGES:
        source = Path(str(importlib.import_module(package).__file__)).parent
        shutil.copytree(source, into / package, ignore=_STAGE_IGNORE)
    (into / STUDY_DIR).mkdir()
    shutil.copyfile(file, into / STUDY_DIR / file.name)
    module = target_module(spec, file)
    if module is not None and module.is_dir():
        shutil.copytree(module, into / module.name, ignore=_STAGE_IGNORE)
    elif module is not None:
        shutil.copyfile(module, into / module.name)
    study_path = f"{STUDY_DIR}/{file.name}"
    entrypoint = (
        f"python -m orchestrator.cli study run {shlex.quote(study_path)} --address auto "
        f"--root {cluster_root(spec, root)}"
    )
    return JobRequest(
        entrypoint=entrypoint,
        runtime_env={"working_dir": str(into)},
        metadata={"gmp.study": spec.name, "gmp.file": file.name},
    )


def submit_study(
    spec: StudySpec,
    file: Path,
    address: str,
    *,
    root: str | None = None,
    follow: bool = False,
    out: TextIO | None = None,
) -> SubmittedJob:
    """Submit the study in `file` to the Ray dashboard at `address`; optionally follow its log
    (written to `out`, default stdout).

    Raises SubmitInputError for a file that cannot be shipped and ClusterAccessError when the
    dashboard cannot be reached or refuses this client (Ray's token authentication)."""
    out = out or sys.stdout
    check_no_secrets(file, file.read_text())
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, AuthenticationError) as err:
        raise ClusterAccessError(str(err)) from None
    with tempfile.TemporaryDirectory(prefix="gmp-job-") as staging:
        request = stage_job(spec, file, Path(staging), root)
        job_id = client.submit_job(
            entrypoint=request.entrypoint,
            runtime_env=request.runtime_env,
            metadata=request.metadata,
        )
    out.write(
        f"submitted study {spec.name} as Ray job {job_id}\n"
        f"  log:    ray job logs --address {redact(address)} --follow {job_id}\n"
        f"  status: gmp study status {spec.name}\n"
    )
    out.flush()
    if not follow:
        return SubmittedJob(job_id)
    return follow_job(client, job_id, out)


def follow_job(
    client: JobSubmissionClient, job_id: str, out: TextIO, poll_s: float = 1.0
) -> SubmittedJob:
    """Stream the job's log to `out` until it ends; its final status and driver exit code."""

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        out.write(f"\nstopped following; job {job_id} goes on (ray job stop {job_id})\n")
        return SubmittedJob(job_id)
    while not (info := client.get_job_info(job_id)).status.is_terminal():
        time.sleep(poll_s)
    out.write(f"job {job_id}: {info.status.value}\n")
    return SubmittedJob(job_id, info.status.value, info.driver_exit_code)
