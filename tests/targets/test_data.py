"""Data files: clear errors offline, refused checksums and malformed originals, fetch-and-cache
from a local HTTP server, and the UCI text conversions round-tripping to the shared npz files."""

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import targets
from targets import uci
from targets.data import CACHE_DIR_ENV, DATA_DIR_ENV, DataError, DataFile, data_path, register_file

SHARED = Path(os.environ[DATA_DIR_ENV])  # tests/conftest.py points it at the shared folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """No GMP_DATA_DIR, and an empty cache folder of our own."""
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _sonar_text(X: np.ndarray, y: np.ndarray) -> str:
    """A sonar.all-data-style table whose features, rescaled per column onto [-1, 1], give X."""
    low = 0.001 * np.arange(1, X.shape[1] + 1)
    high = low + 0.5 + 0.005 * np.arange(X.shape[1])
    raw = low + (X + 1) / 2 * (high - low)
    return "".join(
        ",".join(f"{v:.10f}" for v in row) + ("," + ("R" if label else "M")) + "\n"
        for row, label in zip(raw, y, strict=True)
    )


def _ionosphere_text(X: np.ndarray, y: np.ndarray) -> str:
    return "".join(
        ",".join(f"{v:.9g}" for v in row) + ("," + ("g" if label else "b")) + "\n"
        for row, label in zip(X, y, strict=True)
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[[str, bytes], str]]:
    """serve(name, content) -> the http:// address of a file served on 127.0.0.1."""
    folder = tmp_path / "origin"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def put(name: str, content: bytes) -> str:
        (folder / name).write_bytes(content)
        return f"http://127.0.0.1:{server.server_port}/{name}"

    yield put
    server.shutdown()
    server.server_close()


def test_pinned_credit_checksum_is_that_of_the_shared_original():
    digest = hashlib.sha256((SHARED / uci.GERMAN_CREDIT.name).read_bytes()).hexdigest()
    assert digest == uci.GERMAN_CREDIT.sha256


def test_file_missing_from_data_dir_names_it_and_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError) as err:
        targets.make("sonar")
    message = str(err.value)
    assert "'sonar.npz' not found in GMP_DATA_DIR=" in message
    assert "copy sonar.npz into that folder" in message
    assert f"unset GMP_DATA_DIR to fetch the public original from {uci.SONAR.url}" in message


def test_unreachable_source_names_the_file_and_both_remedies(serve, cache):
    absent = serve("present.csv", b"1\n").replace("present.csv", "absent.csv")  # HTTP 404
    spec = register_file(DataFile("test-unreachable.csv", absent, "0" * 64))
    with pytest.raises(DataError) as err:
        data_path(spec.name)
    message = str(err.value)
    assert "could not fetch data file 'test-unreachable.csv'" in message
    assert "set GMP_DATA_DIR to a folder holding test-unreachable.csv" in message
    assert "connect to the network and retry" in message
    assert not list(cache.rglob("*"))  # pooch makes the folder; nothing is written in it


def test_reference_samples_come_from_the_data_dir_only(tmp_path, monkeypatch):
    (tmp_path / uci.GERMAN_CREDIT.name).write_bytes((SHARED / uci.GERMAN_CREDIT.name).read_bytes())
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    credit = targets.make("credit")  # the data alone suffice to build the target
    with pytest.raises(DataError) as err:
        credit.sample(10)
    message = str(err.value)
    assert "'credit_reference_samples.npz' not found in GMP_DATA_DIR=" in message
    assert "(it has no public source to fetch)" in message and "unset" not in message


def test_a_file_without_public_source_is_not_fetched(cache):
    with pytest.raises(DataError, match=r"'credit_reference_samples\.npz' has no public source"):
        data_path(uci.CREDIT_REFERENCE)


def test_checksum_mismatch_is_refused_and_nothing_cached(serve, cache):
    url = serve("tampered.csv", b"1,2,3\n")
    spec = register_file(DataFile("test-tampered.csv", url, hashlib.sha256(b"1,2,4\n").hexdigest()))
    with pytest.raises(
        DataError, match=r"'test-tampered.csv' .* does not have the known checksum .*refusing"
    ):
        data_path(spec.name)
    assert not list(cache.rglob("*"))


def test_pinned_original_is_fetched_once_into_the_cache(tmp_path, serve, cache):
    original = (SHARED / uci.GERMAN_CREDIT.name).read_bytes()
    url = serve("german.data-numeric", original)
    spec = register_file(DataFile("test-german.data-numeric", url, uci.GERMAN_CREDIT.sha256))
    path = data_path(spec.name)
    assert path == cache / spec.name and path.read_bytes() == original
    (tmp_path / "origin" / "german.data-numeric").unlink()  # the cached copy is used from now on
    assert data_path(spec.name) == path


def test_sonar_text_converts_to_the_shared_npz(serve, cache):
    shared = np.load(SHARED / "sonar.npz")
    text = _sonar_text(shared["X"], shared["y"])
    url = serve("sonar.all-data", text.encode())
    spec = register_file(DataFile("test-sonar.npz", url, None, uci.sonar_from_uci))
    converted = np.load(data_path(spec.name))
    assert data_path(spec.name).parent == cache
    np.testing.assert_allclose(converted["X"], shared["X"], atol=1e-8)
    np.testing.assert_array_equal(converted["y"], shared["y"])


def test_ionosphere_text_converts_to_the_shared_npz(serve, cache):
    shared = np.load(SHARED / "ionosphere.npz")
    url = serve("ionosphere.data", _ionosphere_text(shared["X"], shared["y"]).encode())
    spec = register_file(DataFile("test-ionosphere.npz", url, None, uci.ionosphere_from_uci))
    converted = np.load(data_path(spec.name))
    np.testing.assert_allclose(converted["X"], shared["X"], atol=1e-8)
    np.testing.assert_array_equal(converted["y"], shared["y"])


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda lines: lines[:-1], r"expected 208 rows of 60 features"),
        (lambda lines: [line.rsplit(",", 2)[0] + ",R" for line in lines], r"60 features.*\[59\]"),
        (lambda lines: [*lines[:-1], lines[-1][:-1] + "X"], r"expected classes"),
    ],
    ids=["missing-row", "missing-column", "unknown-class"],
)
def test_unexpected_original_without_checksum_is_refused(serve, cache, corrupt, reason):
    shared = np.load(SHARED / "sonar.npz")
    lines = _sonar_text(shared["X"], shared["y"]).splitlines()
    url = serve("sonar.all-data", "\n".join(corrupt(lines)).encode())
    spec = register_file(DataFile("test-bad-sonar.npz", url, None, uci.sonar_from_uci))
    with pytest.raises(DataError, match=f"is not the expected original .*{reason}"):
        data_path(spec.name)
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_a_file_needs_a_checksum_or_a_checking_conversion():
    with pytest.raises(ValueError, match="needs a sha256 or a checking convert"):
        DataFile("test-unchecked.bin", "file:///nowhere", None)
