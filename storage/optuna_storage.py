"""Optuna storage from a URL: SQLite or a journal file locally, PostgreSQL on a cluster."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)


@contextmanager
def without_experimental_warning() -> Iterator[None]:
    """Use an Optuna feature that Optuna marks experimental (metric names, matplotlib plots)
    without its warning reaching the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# -- The catalogue of the Optuna attribute names gmp sets ------------------------------------
SPEC_ATTR = "gmp_spec"
"""Study attribute: the study definition (JSON) the driver stored when it created the study."""
EXPERIMENT_ATTR = "gmp_experiment"
"""Trial attribute: the Tune experiment (driver run) that started the trial."""
LEASE_PREFIX = "gmp_lease:"
"""Prefix of the study attributes in which live drivers hold their leases."""
TUNE_ID_ATTR = "tune_trial_id"
"""Trial attribute: the Tune trial id, which also keys the trial's MLflow run."""
ORPHAN_ATTR = "gmp_orphaned"
"""Trial attribute: why a trial was marked FAIL after its driver stopped."""
INTERRUPTED_ATTR = "gmp_interrupted"
"""Trial attribute: set while the trial's study waits to resume after Ctrl-C."""
STOPPED_ATTR = "gmp_stopped"
"""Trial attribute: why Tune's scheduler ended the trial before its budget (state PRUNED)."""
CURRENT_ATTR = "gmp_current_experiment"
"""Study attribute: the Tune experiment a driver runs, once trials were added to a finished
study (absent: the study's own name)."""


def open_storage(url: str) -> BaseStorage:
    """The Optuna storage at `url`: `sqlite:///...`, `postgresql+psycopg://...`, `journal:///path`."""
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=None)


def load_study(url: str, name: str) -> optuna.Study:
    """An existing study; `KeyError` naming it if the storage has none of that name."""
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise KeyError(
            f"no study {name!r} in {redact(url)}; known: {', '.join(known) or 'none'}"
        ) from None


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best complete trial, None before one completes: Optuna's own `best_trial`
    for a single objective; with several objectives (where Optuna has a Pareto front, not one
    best) the best complete trial by the first, the primary objective."""
    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:  # no complete trial yet
            return None
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    sign = 1 if study.directions[0] == StudyDirection.MAXIMIZE else -1
    return max(done, key=lambda t: sign * t.values[0], default=None)


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):\S*@")


def redact(text: str) -> str:
    """`text` (a URL, or any text with URLs in it) with every URL password replaced by '***'."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


PASSWORD_ENV = "PGPASSWORD"
"""libpq's environment variable for the password a PostgreSQL URL leaves out."""


def password_to_env(url: str) -> str:
    """A PostgreSQL `url` without its password, which goes to libpq's PGPASSWORD instead: then no
    object that Tune pickles (search algorithm, callbacks) carries it. Other URLs, and a URL whose
    password differs from a PGPASSWORD already set in this process, are returned unchanged."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgresql") or parts.password is None:
        return url
    password = unquote(parts.password)
    if os.environ.setdefault(PASSWORD_ENV, password) != password:
        logger.warning(
            "%s is set to another password than the one in %s: the URL keeps its own, so "
            "Tune's state files (tuner.pkl) will hold it; unset %s to keep it out of them",
            PASSWORD_ENV, redact(url), PASSWORD_ENV,
        )  # fmt: skip
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}@{host}"))
