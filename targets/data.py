"""Data files for the Bayesian targets: `GMP_DATA_DIR` when set, else fetched once into a cache."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pooch

DATA_DIR_ENV = "GMP_DATA_DIR"
CACHE_DIR_ENV = "GMP_CACHE_DIR"
ORIGINALS = "originals"  # sub-folder of the cache holding the originals that get converted


class DataError(FileNotFoundError):
    """A data file is neither in `GMP_DATA_DIR` nor in the cache, and could not be fetched."""


@dataclass(frozen=True)
class DataFile:
    """Where the public original of a data file lives and how to check and convert it.

    `sha256` is the checksum of the downloaded original, or None where it is not known: then
    `convert` must check what it parses (shapes, labels) and raise ValueError on anything else.
    `convert` turns the original's bytes into the file's own format (None: the file is the
    original, byte for byte).
    """

    name: str
    url: str
    sha256: str | None
    convert: Callable[[bytes], bytes] | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None and self.convert is None:
            raise ValueError(f"data file {self.name!r} needs a sha256 or a checking convert")


_FILES: dict[str, DataFile] = {}


def register_file(spec: DataFile) -> DataFile:
    """Declare a data file that a target loads with `data_path(spec.name)`."""
    _FILES[spec.name] = spec
    return spec


def cache_dir() -> Path:
    """The per-user folder that fetched originals are cached in."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gmp" / "data"


def data_path(name: str) -> Path:
    """Local path of data file `name`: from `GMP_DATA_DIR`, the cache, or fetched into the cache."""
    local = os.environ.get(DATA_DIR_ENV)
    if local:
        path = Path(local) / name
        if path.is_file():
            return path
        remedy = (
            f"Either copy {name} into that folder, or unset {DATA_DIR_ENV} to fetch the public "
            f"original from {_FILES[name].url} into the cache."
            if name in _FILES
            else f"Copy {name} into that folder (it has no public source to fetch)."
        )
        raise DataError(f"data file {name!r} not found in {DATA_DIR_ENV}={local}. {remedy}")
    path = cache_dir() / name
    if path.is_file():
        return path
    spec = _FILES.get(name)
    if spec is None:
        raise DataError(
            f"data file {name!r} has no public source to fetch; set {DATA_DIR_ENV} to a folder "
            f"holding {name}."
        )
    _fetch(spec, path)
    return path


def _fetch(spec: DataFile, path: Path) -> None:
    """Download the original with pooch (checked against `sha256`, written atomically), then
    convert it into `path`; a refused original leaves nothing behind."""
    original = path.parent / ORIGINALS / spec.name if spec.convert else path
    try:
        pooch.retrieve(
            spec.url,
            known_hash=f"sha256:{spec.sha256}" if spec.sha256 else None,
            fname=original.name,
            path=original.parent,
            progressbar=sys.stderr.isatty(),
        )
    except OSError as err:  # requests' errors are OSErrors
        raise DataError(
            f"could not fetch data file {spec.name!r} from {spec.url} ({err}). Either set "
            f"{DATA_DIR_ENV} to a folder holding {spec.name}, or connect to the network and "
            f"retry (it is cached in {path.parent} after the first download)."
        ) from err
    except ValueError as err:  # pooch: the checksum differs
        raise DataError(
            f"data file {spec.name!r} fetched from {spec.url} does not have the known checksum "
            f"({err}); refusing to use it. Set {DATA_DIR_ENV} to a folder holding a verified "
            f"copy of {spec.name}."
        ) from err
    if spec.convert is None:
        return
    try:
        content = spec.convert(original.read_bytes())
    except ValueError as err:
        original.unlink()
        raise DataError(
            f"data file {spec.name!r} fetched from {spec.url} is not the expected original "
            f"({err}); refusing to use it. Set {DATA_DIR_ENV} to a folder holding a verified "
            f"copy of {spec.name}."
        ) from err
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(content)
    Path(tmp.name).replace(path)
