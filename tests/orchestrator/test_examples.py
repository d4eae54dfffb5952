"""Every shipped study file is valid, and its search space maps onto trainer configurations."""

from pathlib import Path

import pytest

from orchestrator.cli import _middle_of_space
from orchestrator.spec import load_spec

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").rglob("*.yaml"))


def test_there_is_a_paper_example_per_benchmark_target():
    names = {load_spec(p).target.name for p in EXAMPLES if p.parent.name == "paper"}
    assert names >= {"funnel", "credit", "seeds", "cancer", "brownian", "ionosphere", "sonar"}
    assert names >= {"lgcp", "gmm40", "mos", "digits"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_valid(path):
    spec = load_spec(path)
    config = spec.trainer_config(_middle_of_space(spec))
    assert config.target.name == spec.target.name
    assert spec.budget.evaluations >= 1
