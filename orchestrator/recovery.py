"""What keeps a study consistent when drivers die or meet: one driver per study, clean-up after.

A driver holds a lease on its Tune experiment, kept as a user attribute of the study in the
Optuna storage (host, pid, process start, heartbeat) and renewed in the background. A second
`gmp study run` refuses while the lease is live unless it joins: a joining driver runs its own
Tune experiment on the same Optuna study. A lease is stale when its heartbeat is older than
`STALE_AFTER_S` or, on the same host, when its process is gone.

A driver killed with `kill -9` leaves Optuna trials RUNNING. At its first step, a driver fails
the RUNNING trials that nobody will finish: its own experiment's trials that Tune did not
restore (asked for after Tune's last experiment snapshot), and trials of drivers whose lease
is stale; their MLflow runs are closed too.

A driver on a cluster whose head goes away (the machine lost, Ray's GCS killed) cannot go on:
without GCS fault tolerance a restarted head is a new cluster. `HeadWatch` notices that the
head no longer answers and ends the driver with a message that says so, instead of leaving it
in Ray's reconnection loop until Ray ends it with a log line about the GCS.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from ray.tune import Callback

from storage.optuna_storage import (
    EXPERIMENT_ATTR,
    LEASE_PREFIX,
    ORPHAN_ATTR,
    TUNE_ID_ATTR,
    open_storage,
)
from storage.tracking import close_orphaned_runs

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
CONFIRM_S = 0.5
ORPHAN_REASON = "its driver stopped and no running driver continues it"
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")
HEAD_LOST_AFTER_S = 10.0
HEAD_PROBE_S = 1.0

logger = logging.getLogger(__name__)


class StudyBusyError(RuntimeError):
    """Another live driver runs this study (and this one was not asked to join)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: host, pid and start of the process, last heartbeat (Unix time)."""

    host: str
    pid: int
    start: str
    heartbeat: float
    token: str
    released: bool = False

    def live(self, now: float) -> bool:
        """Whether the holder still runs: recent heartbeat, and its process exists here."""
        if self.released or now - self.heartbeat > STALE_AFTER_S:
            return False
        return self.host != socket.gethostname() or process_start(self.pid) == self.start

    def describe(self, now: float) -> str:
        """'pid 12 on host h, last heartbeat 3 s ago'."""
        return f"pid {self.pid} on {self.host}, last heartbeat {now - self.heartbeat:.0f} s ago"


def process_start(pid: int) -> str | None:
    """An identity of process `pid` that survives pid reuse (start time), None if it is gone."""
    if Path("/proc/self/stat").is_file():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def joining_experiment(study: str) -> str:
    """A new Tune experiment name for a driver that joins `study`."""
    return f"{study}.join-{uuid.uuid4().hex[:8]}"


def read_holder(storage: optuna.storages.BaseStorage, study: str, experiment: str) -> Holder | None:
    """The lease on `experiment` recorded in `study`, if any."""
    study_id = storage.get_study_id_from_name(study)
    record = storage.get_study_user_attrs(study_id).get(LEASE_PREFIX + experiment)
    return Holder(**record) if isinstance(record, dict) else None


class StudyLease:
    """This driver's lease on its Tune experiment of `study`, renewed until released.

    `exclusive`: refuse (StudyBusyError) if another live driver holds the lease. Use as a
    context manager around the run."""

    def __init__(
        self, optuna_url: str, study: str, experiment: str, exclusive: bool = True
    ) -> None:
        self.storage = open_storage(optuna_url)
        self.study = study
        self.experiment = experiment
        self.exclusive = exclusive
        self.holder = Holder(
            host=socket.gethostname(),
            pid=os.getpid(),
            start=process_start(os.getpid()) or "",
            heartbeat=time.time(),
            token=uuid.uuid4().hex,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="gmp-lease", daemon=True)

    def __enter__(self) -> StudyLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease (refusing a live foreign one when exclusive) and start renewing it."""
        self._refuse_if_held()
        self._write(self.holder)
        time.sleep(CONFIRM_S)  # a driver that started at the same moment wrote after us: it wins
        self._refuse_if_held()
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and mark the lease released (if it is still ours)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._ours():
            self._write(Holder(**{**asdict(self.holder), "released": True}))

    def _refuse_if_held(self) -> None:
        current = read_holder(self.storage, self.study, self.experiment)
        now = time.time()
        if (
            not self.exclusive
            or current is None
            or current.token == self.holder.token
            or not current.live(now)
        ):
            return
        raise StudyBusyError(
            f"study {self.study!r} is already run by another driver ({current.describe(now)}); "
            "wait for it to finish or stop it, or add --join to run more trials alongside it"
        )

    def _ours(self) -> bool:
        current = read_holder(self.storage, self.study, self.experiment)
        return current is not None and current.token == self.holder.token

    def _write(self, holder: Holder) -> None:
        study_id = self.storage.get_study_id_from_name(self.study)
        self.storage.set_study_user_attr(study_id, LEASE_PREFIX + self.experiment, asdict(holder))

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self._ours():
                    logger.error("the lease on study %s was taken by another driver", self.study)
                    return
                self._write(Holder(**{**asdict(self.holder), "heartbeat": time.time()}))
            except Exception as err:  # storage briefly unreachable: try again next beat
                logger.warning("could not renew the lease on study %s: %s", self.study, err)


class OrphanReaper(Callback):
    """At the first step of a run, fails the Optuna trials that no driver will finish.

    Those are RUNNING trials of this experiment that Tune did not restore, and RUNNING trials
    started before this run by drivers whose lease is stale (or that were never tagged). Their
    MLflow runs are closed as KILLED with the reason."""

    def __init__(self, optuna_url: str, study: str, experiment: str, tracking_uri: str) -> None:
        self.optuna_url = optuna_url
        self.study = study
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.reaped: list[int] | None = None

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Reap once, before Tune asks the searcher for new trials."""
        if self.reaped is not None:
            return
        continuing = {t.trial_id for t in trials if t.status in UNFINISHED}
        storage = open_storage(self.optuna_url)
        orphans = find_orphans(storage, self.study, self.experiment, continuing, datetime.now())
        study_id = storage.get_study_id_from_name(self.study)
        for frozen in orphans:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            storage.set_trial_user_attr(trial_id, ORPHAN_ATTR, ORPHAN_REASON)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        self.reaped = [t.number for t in orphans]
        tune_ids = [t.user_attrs[TUNE_ID_ATTR] for t in orphans if TUNE_ID_ATTR in t.user_attrs]
        if tune_ids:
            close_orphaned_runs(self.tracking_uri, self.study, tune_ids, ORPHAN_REASON)
        if orphans:
            logger.warning(
                "study %s: marked trial(s) %s FAIL (%s)", self.study, self.reaped, ORPHAN_REASON
            )


def find_orphans(
    storage: optuna.storages.BaseStorage,
    study: str,
    experiment: str,
    continuing: set[str],
    since: datetime,
) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of `study` that no live driver will finish (see OrphanReaper)."""
    study_id = storage.get_study_id_from_name(study)
    now = time.time()
    orphans = []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(EXPERIMENT_ATTR)
        if owner == experiment:
            orphan = trial.user_attrs.get(TUNE_ID_ATTR) not in continuing
        elif trial.datetime_start is None or trial.datetime_start >= since:
            orphan = False  # another live driver asked for it just now
        elif owner is None:
            orphan = True  # its driver died between asking Optuna and tagging the trial
        else:
            holder = read_holder(storage, study, owner)
            orphan = holder is None or not holder.live(now)
        if orphan:
            orphans.append(trial)
    return orphans


def counted_trials(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """How many of a study's trials count against its budget: all but reaped orphans and
    queued trials that have not started (search.first_trials waiting for their turn)."""
    return sum(
        ORPHAN_ATTR not in trial.user_attrs and trial.state != TrialState.WAITING
        for trial in trials
    )


class HeadWatch:
    """Watches a Ray cluster's head from its driver: probes the head's GCS port every
    `probe_s`; once it has not answered for `lost_after_s`, calls `on_lost(seconds)` once,
    from the watch's own thread. Use as a context manager around the run."""

    def __init__(
        self,
        gcs_address: str,
        on_lost: Callable[[float], None],
        lost_after_s: float = HEAD_LOST_AFTER_S,
        probe_s: float = HEAD_PROBE_S,
    ) -> None:
        host, _, port = gcs_address.rpartition(":")
        self.host, self.port = host, int(port)
        self.on_lost = on_lost
        self.lost_after_s = lost_after_s
        self.probe_s = probe_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gmp-head-watch", daemon=True)

    def __enter__(self) -> HeadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def answers(self) -> bool:
        """Whether the head accepts a connection on its GCS port right now."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.probe_s):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        last_answer = time.monotonic()
        while not self._stop.wait(self.probe_s):
            if self.answers():
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer >= self.lost_after_s:
                self.on_lost(time.monotonic() - last_answer)
                return
