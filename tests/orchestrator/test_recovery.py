"""Study leases and orphan clean-up on real Optuna (SQLite) and MLflow stores, real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray.tune.experiment import Trial

from orchestrator.recovery import (
    EXPERIMENT_ATTR,
    LEASE_PREFIX,
    ORPHAN_ATTR,
    STALE_AFTER_S,
    TUNE_ID_ATTR,
    HeadWatch,
    Holder,
    OrphanReaper,
    StudyBusyError,
    StudyLease,
    counted_trials,
    find_orphans,
    process_start,
    read_holder,
)
from storage.optuna_storage import open_storage
from storage.runs import ERROR_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG

STUDY = "lease-study"


@pytest.fixture
def optuna_url(tmp_path: Path) -> str:
    """A SQLite Optuna storage holding one empty study named STUDY."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name=STUDY, storage=open_storage(url))
    return url


def _plant(url: str, experiment: str, **fields: object) -> None:
    """Record a lease holder as another driver would have written it."""
    holder = {"host": socket.gethostname(), "pid": 1, "start": "0", "token": "other"}
    holder.update({"heartbeat": time.time(), **fields})
    storage = open_storage(url)
    storage.set_study_user_attr(
        storage.get_study_id_from_name(STUDY), LEASE_PREFIX + experiment, holder
    )


def test_a_second_driver_is_refused_until_the_first_releases(optuna_url):
    with StudyLease(optuna_url, STUDY, STUDY) as first:
        holder = read_holder(open_storage(optuna_url), STUDY, STUDY)
        assert holder is not None and holder.token == first.holder.token
        assert holder.pid == os.getpid() and holder.live(time.time())
        with pytest.raises(StudyBusyError) as refused:
            StudyLease(optuna_url, STUDY, STUDY).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "--join" in message
        with StudyLease(optuna_url, STUDY, f"{STUDY}.join-1", exclusive=False):
            pass  # a joining driver runs its own experiment next to the first
    released = read_holder(open_storage(optuna_url), STUDY, STUDY)
    assert released is not None and released.released and not released.live(time.time())
    with StudyLease(optuna_url, STUDY, STUDY):
        pass


def test_a_lease_of_a_live_process_holds_and_is_stale_once_it_is_killed(optuna_url):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(optuna_url, STUDY, pid=other.pid, start=process_start(other.pid))
        with pytest.raises(StudyBusyError, match=f"pid {other.pid} "):
            StudyLease(optuna_url, STUDY, STUDY).acquire()
    finally:
        other.kill()
        other.wait()
    assert process_start(other.pid) is None
    with StudyLease(optuna_url, STUDY, STUDY) as lease:
        assert read_holder(open_storage(optuna_url), STUDY, STUDY).token == lease.holder.token


@pytest.mark.parametrize(
    ("fields", "live"),
    [
        ({"heartbeat": time.time() - STALE_AFTER_S - 5}, False),
        ({"released": True}, False),
        ({"pid": os.getpid(), "start": "not the start of this process"}, False),  # pid reused
        ({"host": "another-host"}, True),  # its process cannot be checked from here
    ],
    ids=["old heartbeat", "released", "pid reused", "other host"],
)
def test_when_a_lease_is_live(optuna_url, fields, live):
    _plant(optuna_url, STUDY, **fields)
    assert read_holder(open_storage(optuna_url), STUDY, STUDY).live(time.time()) is live
    if live:
        with pytest.raises(StudyBusyError):
            StudyLease(optuna_url, STUDY, STUDY).acquire()
    else:
        with StudyLease(optuna_url, STUDY, STUDY):
            pass


def test_reaper_fails_exactly_the_trials_no_live_driver_will_finish(tmp_path, optuna_url):
    storage = open_storage(optuna_url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(STUDY)
    _plant(optuna_url, "joiner-live", pid=os.getpid(), start=process_start(os.getpid()))
    _plant(optuna_url, "joiner-dead", heartbeat=time.time() - STALE_AFTER_S - 5)
    cases = {  # Tune trial id: (experiment tag, expected orphan)
        "resumed": (STUDY, False),
        "lost": (STUDY, True),  # asked for after Tune's last experiment snapshot
        "untagged": (None, True),  # its driver died between asking and tagging
        "live-join": ("joiner-live", False),
        "dead-join": ("joiner-dead", True),
    }
    runs = {}
    for tune_id, (experiment, _) in cases.items():
        trial = study.ask()
        if experiment is not None:
            trial.set_user_attr(TUNE_ID_ATTR, tune_id)
            trial.set_user_attr(EXPERIMENT_ATTR, experiment)
        tags = {STUDY_TAG: STUDY, TRIAL_TAG: tune_id}
        runs[tune_id] = client.create_run(experiment_id, tags=tags).info.run_id
    done = study.ask()
    study.tell(done, 1.0)
    restored = [Trial("GMPTrainable", trial_id=i, stub=True) for i in ("resumed", "finished")]
    restored[1].set_status(Trial.TERMINATED)

    reaper = OrphanReaper(optuna_url, STUDY, STUDY, tracking_uri)
    reaper.on_step_begin(iteration=0, trials=restored)
    study.tell(study.ask(), 2.0)  # this run goes on
    reaper.on_step_begin(iteration=1, trials=restored)  # reaps at the first step only

    states = {t.number: t.state for t in study.get_trials()}
    expected = [n for n, (_, orphan) in enumerate(cases.values()) if orphan]
    assert sorted(reaper.reaped) == expected
    assert [n for n, s in states.items() if s == TrialState.FAIL] == expected
    assert states[done.number] == TrialState.COMPLETE
    assert counted_trials(study.get_trials()) == len(states) - len(expected)
    assert all(ORPHAN_ATTR in study.trials[n].user_attrs for n in expected)
    for tune_id, (_, orphan) in cases.items():
        run = client.get_run(runs[tune_id])
        if orphan and tune_id != "untagged":
            assert run.info.status == "KILLED" and run.data.tags[STATE_TAG] == "ORPHANED"
            assert "no running driver continues it" in run.data.tags[ERROR_TAG]
        else:
            assert run.info.status == "RUNNING"


def test_a_trial_asked_for_after_the_run_began_is_never_an_orphan(optuna_url):
    storage = open_storage(optuna_url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    before = study.ask()
    since = datetime.now()
    study.ask()  # untagged: another driver is between asking and tagging it
    assert [t.number for t in find_orphans(storage, STUDY, STUDY, set(), since)] == [before.number]


def test_holder_describes_its_process():
    holder = Holder(host="h", pid=7, start="1", heartbeat=time.time() - 3, token="t")
    assert holder.describe(time.time()) == "pid 7 on h, last heartbeat 3 s ago"


def test_head_watch_reports_a_head_that_stops_answering_once_and_not_before():
    head = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{head.getsockname()[1]}"
    lost: list[float] = []
    with HeadWatch(address, lost.append, lost_after_s=0.6, probe_s=0.1) as watch:
        time.sleep(1.0)
        assert watch.answers() and lost == []  # a head that answers is never lost
        head.close()
        closed_at = time.monotonic()
        while not lost and time.monotonic() - closed_at < 10:
            time.sleep(0.05)
        time.sleep(0.5)
    assert len(lost) == 1 and 0.5 <= lost[0] < 2.0
