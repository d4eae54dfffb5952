"""Public UCI originals (CC BY 4.0) of the logistic-regression data sets, and their conversion.

German credit is used as published (its checksum is pinned). The Sonar and Ionosphere originals
are text tables whose checksums we could not take here (no network when this was written), so
their conversion into the project's `.npz` layout (`X` features, `y` 0/1 labels) checks the
shape and the count of every class of what it parses instead, and refuses anything else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from targets.data import DataFile, register_file

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases"


@dataclass(frozen=True)
class LabelledTable:
    """The layout of a UCI table: `n_features` numbers, then a class letter per row.

    `classes` maps each class letter to its 0/1 label and its number of rows in the original.
    """

    n_features: int
    classes: dict[str, tuple[int, int]]

    @property
    def n_rows(self) -> int:
        """Rows of the original table."""
        return sum(count for _, count in self.classes.values())


SONAR_TABLE = LabelledTable(n_features=60, classes={"R": (1, 97), "M": (0, 111)})
IONOSPHERE_TABLE = LabelledTable(n_features=34, classes={"g": (1, 225), "b": (0, 126)})


def parse_table(raw: bytes, table: LabelledTable) -> tuple[np.ndarray, np.ndarray]:
    """Features [n_rows, n_features] and 0/1 labels [n_rows] of a UCI table.

    Raises ValueError where the table is not as `table` describes.
    """
    rows = [line.split(",") for line in raw.decode("ascii").splitlines() if line.strip()]
    if len(rows) != table.n_rows or any(len(r) != table.n_features + 1 for r in rows):
        raise ValueError(
            f"expected {table.n_rows} rows of {table.n_features} features and a class, got "
            f"{len(rows)} rows of {sorted({len(r) - 1 for r in rows})} features"
        )
    letters = [r[-1].strip() for r in rows]
    counts = {c: letters.count(c) for c in set(letters)}
    expected = {c: n for c, (_, n) in table.classes.items()}
    if counts != expected:
        raise ValueError(f"expected classes {expected}, got {counts}")
    features = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float64)
    if not np.isfinite(features).all():
        raise ValueError("non-finite feature values")
    labels = np.array([table.classes[c][0] for c in letters], dtype=np.int64)
    return features, labels


def _npz(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def sonar_from_uci(raw: bytes) -> bytes:
    """`sonar.npz` from `sonar.all-data`: features rescaled per column onto [-1, 1], rock = 1."""
    X, y = parse_table(raw, SONAR_TABLE)
    low, high = X.min(0), X.max(0)
    return _npz(2 * (X - low) / (high - low) - 1, y)


def ionosphere_from_uci(raw: bytes) -> bytes:
    """`ionosphere.npz` from `ionosphere.data`: features as published, good = 1."""
    return _npz(*parse_table(raw, IONOSPHERE_TABLE))


GERMAN_CREDIT = register_file(
    DataFile(
        name="german.data-numeric",
        url=f"{_UCI}/statlog/german/german.data-numeric",
        sha256="2752b044394958ab6dd193a0b56ca0f0b3a2d8bc7cb8c008e35a5e84bbec02f8",
    )
)
SONAR = register_file(
    DataFile(
        name="sonar.npz",
        url=f"{_UCI}/undocumented/connectionist-bench/sonar/sonar.all-data",
        sha256=None,
        convert=sonar_from_uci,
    )
)
IONOSPHERE = register_file(
    DataFile(
        name="ionosphere.npz",
        url=f"{_UCI}/ionosphere/ionosphere.data",
        sha256=None,
        convert=ionosphere_from_uci,
    )
)
# Long-run MCMC samples of the Credit posterior from a public sampling benchmark (MIT); no public
# address is known to us, so this file comes from GMP_DATA_DIR only.
CREDIT_REFERENCE = "credit_reference_samples.npz"
