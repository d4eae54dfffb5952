"""Every shipped study file is valid, and its search space maps onto trainer configurations."""

from pathlib import Path

import pytest

from orchestrator.cli import _middle_of_space
from orchestrator.spec import load_spec

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").rglob("*.yaml"))


@pytest.mark.parametrize("sampler", ["dis", "mcd", "cmcd", "dbs"])
def test_there_is_a_paper_example_per_benchmark_target_and_sampler(sampler):
    specs = [load_spec(p) for p in EXAMPLES if p.parent.name == sampler]
    assert {spec.sampler for spec in specs} == {sampler}
    names = {spec.target.name for spec in specs}
    assert names >= {"funnel", "credit", "seeds", "cancer", "brownian", "ionosphere", "sonar"}
    assert names >= {"lgcp", "gmm40", "mos", "digits"}
    for spec in specs:  # the search covers K, N, the IMR schedule and the learning rates
        assert {"prior.k_max", "time.n_steps", "imr.interval", "optim.lr_network"} <= set(
            spec.search_space
        )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_valid(path):
    spec = load_spec(path)
    config = spec.trainer_config(_middle_of_space(spec))
    assert config.target.name == spec.target.name
    assert spec.budget.evaluations >= 1
