"""Study files: `annealing.*` in `fixed` and `search_space` validate; bad values name the field."""

import copy

import pytest

from orchestrator.spec import SpecError, parse_spec
from tests.orchestrator.test_spec import VALID


def _study(fixed: dict | None = None, search: dict | None = None) -> dict:
    data = copy.deepcopy(VALID)
    del data["search_space"]["time.n_steps"]  # also fixed in VALID
    data["fixed"].update(fixed or {})
    data["search_space"].update(search or {})
    return data


def test_annealing_settings_validate_and_take_the_budget_as_run_length():
    spec = parse_spec(
        _study(
            fixed={"annealing": {"fraction": 0.25, "factor": 0.5}},
            search={
                "annealing.schedule": {
                    "type": "categorical",
                    "choices": ["none", "linear", "geometric", "adaptive"],
                },
                "annealing.t0": {"type": "float", "low": 2.0, "high": 50.0, "log": True},
            },
        )
    )
    config = spec.trainer_config({"annealing.schedule": "geometric", "annealing.t0": 8.0})
    annealing = config.annealing
    assert (annealing.schedule, annealing.t0, annealing.fraction) == ("geometric", 8.0, 0.25)
    assert annealing.factor == 0.5
    assert annealing.iterations == spec.budget.iterations == 20
    fixed_length = parse_spec(_study(fixed={"annealing": {"iterations": 7}}))
    assert fixed_length.trainer_config({}).annealing.iterations == 7
    assert parse_spec(_study()).trainer_config({}).annealing.schedule == "none"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _study(search={"annealing.schedule": {"type": "categorical", "choices": ["cosine"]}}),
            "search_space.annealing.schedule: annealing.schedule: Input should be 'none', "
            "'linear', 'geometric' or 'adaptive' (value 'cosine')",
        ),
        (
            _study(search={"annealing.t0": {"type": "float", "low": 0.5, "high": 4.0}}),
            "search_space.annealing.t0: annealing.t0: Input should be greater than or equal to 1 "
            "(value 0.5)",
        ),
        (
            _study(fixed={"annealing": {"threshold": 2.0}}),
            "fixed: annealing.threshold: Input should be less than or equal to 1",
        ),
        (
            _study(fixed={"annealing": "geometric"}),
            "fixed: annealing: Input should be a valid dictionary",
        ),
        (
            _study(search={"annealing.speed": {"type": "float", "low": 1.0, "high": 2.0}}),
            "search_space.annealing.speed: not a trainer setting",
        ),
    ],
    ids=["unknown schedule", "t0 below one", "threshold above one", "not a group", "unknown key"],
)
def test_bad_annealing_values_name_the_field(data, message):
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "study.yaml")
    assert message in str(caught.value), str(caught.value)
