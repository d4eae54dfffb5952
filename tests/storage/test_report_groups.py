"""Grouping and statistics of the study report, on hand-made trial records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from storage.records import TrialRecord
from storage.report import build_report, render_report, sweep_families


def _record(trial_id: str, *, k: int, learn: bool = True, imr: bool = False, **kw) -> TrialRecord:
    elbo = kw.pop("elbo", [(10, -3.0), (20, -2.0)])
    params = {
        "target.name": "gmm40",
        "target.kwargs.dim": 2,
        "sampler": "dis",
        "prior.k_max": k,
        "prior.learn": learn,
        "imr.enabled": imr,
        **kw.pop("params", {}),
    }
    return TrialRecord(
        study=kw.pop("study", "s"),
        trial_id=trial_id,
        run_id=trial_id,
        state=kw.pop("state", "TERMINATED"),
        params=params,
        history={"elbo": elbo},
    )


def test_variants_follow_the_paper_families():
    assert _record("a", k=1, learn=False).variant == "Gaussian (fixed)"
    assert _record("a", k=1).variant == "Gaussian (learned)"
    assert _record("a", k=1, imr=True).variant == "Gaussian (learned)"
    assert _record("a", k=5).variant == "GMP"
    assert _record("a", k=5, imr=True).variant == "GMP+IMR"
    annealed = _record("a", k=5, imr=True, params={"annealing.schedule": "geometric"})
    assert annealed.variant == "GMP+IMR + geometric annealing"
    assert _record("a", k=1, params={"annealing.schedule": "none"}).variant == (
        "Gaussian (learned)"
    )
    # a mixture that starts with one component stays one Gaussian without IMR
    assert _record("a", k=10, params={"prior.k_init": 1}).variant == "Gaussian (learned)"
    assert _record("a", k=10, imr=True, params={"prior.k_init": 1}).variant == "GMP+IMR"
    assert _record("a", k=10, params={"prior.k_init": None}).k == 10


def test_final_value_is_the_mean_of_the_last_five_evaluations():
    history = [(i * 10, float(i)) for i in range(1, 9)]  # values 1..8
    record = _record("a", k=1, elbo=history)
    assert record.final("elbo") == pytest.approx(6.0)  # mean of 4..8
    assert math.isnan(record.final("emc"))
    assert record.iterations == 80


def test_groups_give_mean_and_sample_std_and_leave_out_unfinished_trials():
    records = [
        _record("a", k=1, elbo=[(10, -4.0), (20, -2.0)]),
        _record("b", k=1, elbo=[(10, -4.0), (20, -1.0)]),
        _record("c", k=4, imr=True, elbo=[(10, -1.0), (20, -0.5)]),
        _record("d", k=4, imr=True, elbo=[(10, -9.0)]),  # stopped early by the scheduler
        _record("e", k=4, state="ERROR"),
    ]
    report = build_report(records, ["s"])
    assert [(g.variant, g.k, len(g.trials)) for g in report.groups] == [
        ("Gaussian (learned)", 1, 2),
        ("GMP+IMR", 4, 1),
    ]
    mean, std, n = report.groups[0].stats("elbo")
    assert (mean, n) == (pytest.approx(-2.75), 2)  # finals -3.0 and -2.5
    assert std == pytest.approx(math.sqrt(0.125))
    left = {r.trial_id: why for r, why in report.left_out}
    assert left == {"d": "stopped early at 10/20", "e": "state ERROR"}
    assert report.metrics == ["elbo"]


def test_k_sweep_lines_join_a_gaussian_to_its_mixture_family_and_name_lone_priors():
    records = [
        _record("a", k=1),
        _record("b", k=1, learn=False),
        _record("c", k=4),
        _record("d", k=4, imr=True),
    ]
    lines = sweep_families(build_report(records, ["s"]).groups)
    assert {name: [g.k for g in groups] for name, groups in lines.items()} == {
        "GMP": [1, 4],  # the learned Gaussian is the K = 1 end of the GMP line
        "Gaussian (fixed)": [1],
        "GMP+IMR": [4],
    }


def _in_store(folder: Path, records: list[TrialRecord]) -> None:
    """Give the records real MLflow runs (without samples, so no sample plots) in `folder`."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("s")
    for record in records:
        record.run_id, record.tracking_uri = client.create_run(experiment).info.run_id, uri


def test_each_section_shows_only_the_metrics_its_trials_have(tmp_path):
    with_modes = [_record(name, k=k) for name, k in (("a", 1), ("b", 4))]
    for record in with_modes:
        record.history["emc"] = [(10, 0.5), (20, 0.7)]
    funnel = {"target.name": "funnel", "target.kwargs.dim": 10}
    without = [_record(name, k=k, params=funnel) for name, k in (("c", 1), ("d", 4))]
    _in_store(tmp_path, with_modes + without)
    render_report(with_modes + without, ["s"], tmp_path / "out", log_to_parent=False)
    page = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert [line for line in page if line.startswith("| prior")] == [
        "| prior | K | trials | ELBO ↑ |",  # funnel
        "| prior | K | trials | ELBO ↑ | EMC ↑ |",  # gmm40
    ]


def test_a_trial_without_parameters_is_listed_as_left_out(tmp_path):
    records = [_record("a", k=1), TrialRecord("s", "orphan", "run-orphan", "KILLED", params={})]
    _in_store(tmp_path, records)
    render_report(records, ["s"], tmp_path / "out", log_to_parent=False)
    page = (tmp_path / "out" / "report.md").read_text()
    assert "s/orphan (no parameters recorded): state KILLED" in page
