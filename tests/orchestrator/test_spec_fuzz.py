"""The study loader under random input (Hypothesis): every file is a study or a clear error.

Whatever the YAML holds (random structures and types, unicode, huge numbers, deep nesting, bytes
that are not text), `load_spec` returns a validated study or raises `SpecError` naming the file,
and `gmp study run` on an invalid file exits 2 with that message and writes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec
from tests.e2e.conftest import SMALL_STUDY

EXAMPLES = 200

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of the nested mappings in `data`."""
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        found.append((*prefix, key))
        found += _paths(value, (*prefix, key))
    return found


PATHS = _paths(SMALL_STUDY)


@st.composite
def mutated_studies(draw: st.DrawFn) -> str:
    """The small e2e study with up to three fields replaced by random values, as YAML text."""
    data = copy.deepcopy(SMALL_STUDY)
    for _ in range(draw(st.integers(1, 3))):
        *parents, leaf = draw(st.sampled_from(PATHS))
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[leaf] = draw(values)
    return yaml.safe_dump(data, allow_unicode=True)


def deep(depth: int) -> str:
    """A YAML document nested `depth` levels deep."""
    return "a: " + "[" * depth + "]" * depth + "\n"


# PyYAML's pure-Python parser gives up (RecursionError) near depth 500 and takes time quadratic
# in the depth: 100 to 900 levels cover both sides of that limit, in about a second at most.
documents = (
    mutated_studies()
    | values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
    | st.text(max_size=200)
    | st.integers(100, 900).map(deep)
)


def _check(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "study.yaml"
        if isinstance(text, bytes):
            file.write_bytes(text)
        else:
            file.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_spec(file)
        except SpecError as err:
            assert str(err).startswith(f"{file}: invalid study file\n  "), err
        else:
            return  # a valid study: running it is the end-to-end tests' job
        root = Path(tmp) / "records"
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(["study", "run", str(file), "--root", str(root)])
        assert code == 2
        assert stderr.getvalue().startswith(f"error: {file}: invalid study file")
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["study.yaml"]  # nothing written


@pytest.mark.slow  # 200 documents, some nested hundreds deep
@pytest.mark.timeout(300)  # no example may hang
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(documents)
def test_every_document_is_a_study_or_exits_2_with_a_message(text: str) -> None:
    _check(text)


@pytest.mark.timeout(120)
@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.binary(min_size=1, max_size=300))
def test_every_byte_string_is_a_study_or_exits_2_with_a_message(data: bytes) -> None:
    _check(data)
