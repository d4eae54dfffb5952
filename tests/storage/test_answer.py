"""Run names and the study's answer: what a user reads first in MLflow."""

from storage.answer import study_note, trial_run_name
from storage.records import TrialRecord, prior_family

GMP_IMR = {"prior.k_max": 10, "imr.enabled": True, "prior.learn": True}


def test_run_names_say_the_family_its_size_the_searched_values_and_the_trial_number():
    searched = {"prior.k_max": 10, "imr.enabled": True, "optim.lr_network": 7e-4, "seed": 2}
    assert (
        trial_run_name(GMP_IMR, searched, 3) == "GMP K=10 +IMR · lr_network 7.0e-04 · seed 2 · #3"
    )
    assert prior_family({"prior.k_max": 1, "prior.learn": False}, sized=True) == "Gaussian (fixed)"
    assert prior_family({"prior.k_max": 4, "prior.k_init": 4}, sized=True) == "GMP K=4"
    annealed = {**GMP_IMR, "annealing.schedule": "linear"}
    assert prior_family(annealed, sized=True) == "GMP K=10 +IMR + linear annealing"
    assert trial_run_name({"prior.k_max": 1}, {}, None) == "Gaussian (learned)"


def _record(trial: str, params: dict, elbos: list[float], name: str = "") -> TrialRecord:
    history = {"elbo": [(10 * (i + 1), v) for i, v in enumerate(elbos)]}
    return TrialRecord("s", trial, f"run-{trial}", "TERMINATED", params, history=history, name=name)


def test_the_note_names_the_best_trial_and_averages_each_family_over_its_trials():
    gauss = {"prior.k_max": 1}
    records = [
        _record("a", gauss, [-9.0, -5.0, -4.0, -3.0, -2.0, -1.0]),  # last 5: mean -3
        _record("b", gauss, [-5.0]),
        _record("c", GMP_IMR, [-2.0, -0.5], name="GMP K=10 +IMR · #2"),
    ]
    note = study_note("s", records, "elbo", records[2])
    assert "**Best trial:** GMP K=10 +IMR · #2, ELBO -1.25 (mean of its last evaluations)" in note
    assert "| GMP K=10 +IMR | 1 | -1.25 |" in note
    assert "| Gaussian (learned) | 2 | -4 (-5 to -3) |" in note


def test_a_trial_killed_before_its_first_evaluation_is_not_counted_and_breaks_nothing():
    records = [
        _record("a", {"prior.k_max": 1}, [-2.0]),
        TrialRecord("s", "orphan", "run-orphan", "ORPHANED", params={}),  # no params, no metrics
    ]
    note = study_note("s", records, "elbo", None)
    assert "| Gaussian (learned) | 1 | -2 |" in note
