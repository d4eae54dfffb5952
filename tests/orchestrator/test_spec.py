"""Study files: valid ones map onto trainer configs; each kind of bad one names its field."""

import copy

import pytest

from orchestrator.spec import SpecError, load_spec, parse_spec

VALID = {
    "name": "unit-study",
    "target": {"name": "gmm40", "kwargs": {"dim": 2}},
    "sampler": "dis",
    "fixed": {"batch_size": 64, "time": {"n_steps": 8}},
    "search_space": {
        "prior.k_max": {"type": "categorical", "choices": [1, 4]},
        "optim.lr_network": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "time.n_steps": {"type": "int", "low": 8, "high": 16},
    },
    "objective": {"metric": "emc", "direction": "maximize"},
    "budget": {"trials": 4, "iterations": 20, "eval_interval": 10},
}


def _with(path: str, value: object) -> dict:
    data = copy.deepcopy(VALID)
    *parents, leaf = path.split("/")
    node = data
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return data


_DELETE = object()


def test_valid_study_maps_onto_trainer_configs():
    fixed_overlap = _with("search_space", dict(VALID["search_space"]))
    del fixed_overlap["search_space"]["time.n_steps"]
    spec = parse_spec(fixed_overlap)
    assert spec.primary.metric == "emc" and spec.budget.evaluations == 2
    config = spec.trainer_config({"prior.k_max": 4, "optim.lr_network": 1e-3}, seed=7)
    assert config.prior.k_max == 4 and config.optim.lr_network == 1e-3
    assert config.batch_size == 64 and config.time.n_steps == 8 and config.seed == 7
    assert config.target.name == "gmm40" and config.target.kwargs == {"dim": 2}


def test_a_searched_seed_gives_replicates_and_the_study_seed_is_the_default():
    data = _with("search_space/seed", {"type": "categorical", "choices": [0, 1, 2]})
    data["seed"] = 5
    del data["search_space"]["time.n_steps"]
    spec = parse_spec(data)
    assert [spec.trainer_config({"seed": s}).seed for s in (0, 1, 2)] == [0, 1, 2]
    assert spec.trainer_config({}).seed == 5


@pytest.mark.parametrize("sampler", ["dis", "mcd", "cmcd", "dbs"])
def test_every_sampler_and_its_drift_settings_are_valid(sampler):
    data = _with("sampler", sampler)
    del data["search_space"]["time.n_steps"]  # also fixed
    data["fixed"]["drift"] = {"score_clip": 10.0}
    data["search_space"]["drift.learn_betas"] = {"type": "categorical", "choices": [True, False]}
    spec = parse_spec(data)
    config = spec.trainer_config({"prior.k_max": 1, "drift.learn_betas": False})
    assert config.sampler == sampler
    assert config.drift.score_clip == 10.0 and config.drift.learn_betas is False


BAD = [
    ("unknown top-level key", _with("trails", 3), "trails: Extra inputs are not permitted"),
    ("unknown nested key", _with("budget/trails", 3), "budget.trails: Extra inputs"),
    (
        "wrong type",
        _with("budget/trials", "many"),
        "budget.trials: Input should be a valid integer",
    ),
    ("K below one (fixed)", _with("fixed/prior", {"k_max": 0}), "fixed: prior.k_max: Input should"),
    (
        "K below one (choice)",
        _with("search_space/prior.k_max", {"type": "categorical", "choices": [0, 2]}),
        "search_space.prior.k_max: prior.k_max: Input should be greater than or equal to 1 "
        "(value 0)",
    ),
    (
        "negative learning rate",
        _with("search_space/optim.lr_network", {"type": "float", "low": -1.0, "high": 1e-2}),
        "search_space.optim.lr_network: optim.lr_network: Input should be greater than 0",
    ),
    (
        "empty range",
        _with("search_space/time.n_steps", {"type": "int", "low": 16, "high": 16}),
        "search_space.time.n_steps.int: empty range",
    ),
    (
        "log range from zero",
        _with(
            "search_space/optim.lr_network", {"type": "float", "low": 0.0, "high": 1.0, "log": True}
        ),
        "a log range needs low > 0",
    ),
    ("unknown target", _with("target/name", "nope"), "unknown target 'nope'"),
    ("unknown sampler", _with("sampler", "pis"), "sampler: Input should be 'dis', 'mcd'"),
    ("unknown target argument", _with("target/kwargs", {"dims": 2}), "no argument(s) dims"),
    (
        "metric the target cannot give",
        _with("target", {"name": "funnel"}),
        "objective metric 'emc' needs a target with known modes",
    ),
    (
        "unknown metric",
        _with("objective", {"metric": "accuracy", "direction": "maximize"}),
        "objective.0.metric",
    ),
    (
        "search key that is no setting",
        _with("search_space/optim.momentum", {"type": "float", "low": 0.1, "high": 0.9}),
        "search_space.optim.momentum: not a trainer setting",
    ),
    ("path traversal in the name", _with("name", "../evil"), "name: must be 1-100 letters"),
    (
        "evaluation interval longer than training",
        _with("budget/eval_interval", 50),
        "budget: eval_interval (50) must be <= iterations (20)",
    ),
    ("missing objective", _with("objective", _DELETE), "objective: Field required"),
    ("nothing to search", _with("search_space", _DELETE), "search_space: empty; search at least"),
    (
        "scheduler with several objectives",
        _with(
            "objective",
            [
                {"metric": "emc", "direction": "maximize"},
                {"metric": "elbo", "direction": "maximize"},
            ],
        )
        | {"scheduler": {"type": "asha"}},
        "early stopping (scheduler) needs a single objective",
    ),
    (
        "fraction of a trial",
        _with("budget/trials", 0),
        "budget.trials: Input should be greater than",
    ),
    (
        "negative GPUs",
        _with("resources", {"gpus": -0.5}),
        "resources.gpus: Input should be greater",
    ),
    (
        "first trial outside the space",
        _with("search", {"first_trials": [{"prior.k_max": 1}, {"prior.k_max": 3}]}),
        "search.first_trials.1: prior.k_max=3 is outside the search space",
    ),
    (
        "first trial with a key not searched",
        _with("search", {"first_trials": [{"imr.enabled": True}]}),
        "search.first_trials.0: 'imr.enabled' is not in the search space",
    ),
    (
        "more first trials than the budget",
        _with("search", {"first_trials": [{"prior.k_max": 1}] * 5}),
        "search.first_trials lists 5 trials; the budget has 4",
    ),
]


@pytest.mark.parametrize(("kind", "data", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_study_is_rejected_naming_the_field(kind, data, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "study.yaml")
    text = str(caught.value)
    assert text.startswith("study.yaml: invalid study file")
    assert message in text, text


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match=r"missing.yaml: invalid study file\n  cannot read"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_spec(scalar)
