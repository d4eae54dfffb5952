"""Optuna storage from a URL: SQLite or a journal file locally, PostgreSQL on a cluster."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

INTERRUPTED_ATTR = "gmp_interrupted"  # a trial's user attribute while its study waits to resume


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
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}@{host}"))
