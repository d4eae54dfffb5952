"""Every shipped study file is valid, and its search space maps onto trainer configurations."""

from pathlib import Path

import pytest

from orchestrator.cli import _middle_of_space
from orchestrator.spec import load_spec

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").rglob("*.yaml"))


PAPER = [p for p in EXAMPLES if p.parent.name == "paper"]


@pytest.mark.parametrize("sampler", ["dis", "mcd", "cmcd", "dbs"])
def test_one_paper_example_per_benchmark_target_runs_every_sampler(sampler):
    """examples/paper/ holds one file per target; `--sampler` picks the sampler, and the
    study's name follows it (each sampler is its own study)."""
    specs = [load_spec(p, sampler) for p in PAPER]
    assert {spec.sampler for spec in specs} == {sampler}
    assert all(spec.name.endswith(f"-{sampler}") for spec in specs)
    names = {spec.target.name for spec in specs}
    assert names == {"funnel", "credit", "seeds", "cancer", "brownian", "ionosphere", "sonar"} | {
        "lgcp",
        "gmm40",
        "mos",
        "digits",
    }
    assert len(PAPER) == 12  # gmm40 twice: d = 2 and d = 50
    for spec in specs:  # the search covers K, N, the IMR schedule and the learning rates
        assert {"prior.k_max", "time.n_steps", "imr.interval", "optim.lr_network"} <= set(
            spec.search_space
        )
    assert load_spec(PAPER[0]).sampler == "dis"  # the files' own choice


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_valid(path):
    spec = load_spec(path)
    config = spec.trainer_config(_middle_of_space(spec))
    assert config.target.name == spec.target.name
    assert spec.budget.evaluations >= 1
