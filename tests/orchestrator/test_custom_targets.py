"""Targets of one's own, without editing the package: a `module:function` reference in the study
file, or an entry point of an installed distribution; run by `gmp train` against their known
log Z, and every way a reference can be wrong is bad input naming `target.name` and the file."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

import targets
import trainers
from orchestrator.cli import main
from tests.user_targets import DIM, LOG_Z, MODULE, SCALE, write_module, write_study

FAST = ["--set", "batch_size=64", "--set", "eval_samples=500", "--set", "time.n_steps=8"]
FAST += ["--set", "network.hidden=16", "--set", "network.n_time_features=8"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_target" / "anisotropic.yaml"


def _train(study: Path, out: Path, *options: str) -> trainers.Trainer:
    assert main(["train", str(study), "--out", str(out), *options]) == 0
    return trainers.load(out)


def _assert_estimates(trained: trainers.Trainer, log_z: float) -> None:
    metrics = trained.evaluate().metrics
    assert abs(metrics["log_z"] - log_z) < 0.1, metrics
    assert metrics["delta_log_z"] == pytest.approx(abs(metrics["log_z"] - log_z), abs=1e-9)
    assert metrics["elbo"] <= log_z + 0.05


def test_a_module_beside_the_study_file_trains_to_its_known_log_z(fresh_imports, monkeypatch):
    folder = fresh_imports / "study"
    folder.mkdir()
    write_module(folder)
    study = write_study(folder)
    monkeypatch.chdir(fresh_imports)  # not the study's folder: found through the study file
    trained = _train(study, fresh_imports / "model")
    assert trained.config.target.name == f"{MODULE}:scaled_gaussian"
    assert trained.target.dim == DIM and trained.iteration == 30
    _assert_estimates(trained, LOG_Z)


def test_an_installed_distributions_entry_point_is_a_target_name(fresh_imports):
    site = fresh_imports / "site"
    site.mkdir()
    write_module(site, "gmp_demo_plugin")
    info = site / "gmp_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gmp-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[gmp.targets]\ndemo_gaussian = gmp_demo_plugin:scaled_gaussian\n"
        "broken = gmp_demo_plugin_missing:nothing\n"
    )
    assert "demo_gaussian" not in targets.names()
    sys.path.insert(0, str(site))  # as `pip install` would have put it (undone after the test)
    assert "demo_gaussian" in targets.names()
    facts = targets.info("demo_gaussian")
    assert facts.summary == "An isotropic Gaussian whose log normaliser is known."
    assert facts.dim == "3" and facts.log_Z and not facts.samples and not facts.modes
    with pytest.raises(targets.TargetError, match="entry point 'gmp_demo_plugin_missing:nothing'"):
        targets.make("broken")

    study = write_study(
        fresh_imports, target={"name": "demo_gaussian", "kwargs": {"dim": DIM, "scale": SCALE}}
    )
    _assert_estimates(_train(study, fresh_imports / "model"), LOG_Z)


BAD = {
    "missing module": ("no_such_gmp_module:make", {}, "no module named 'no_such_gmp_module'"),
    "missing attribute": (f"{MODULE}:nope", {}, f"module '{MODULE}' has no attribute 'nope'"),
    "not callable": (f"{MODULE}:not_callable", {}, "is a int, not a function or class"),
    "not a target": (f"{MODULE}:not_a_target", {}, "returned dict, not a targets.Target"),
    "wrong dimension": (
        f"{MODULE}:wrong_dimension",
        {"dim": 3},
        "built with dim=3 but has dim 4",
    ),
    "log_prob of the wrong shape": (
        f"{MODULE}:per_coordinate",
        {},
        "log_prob of a [2, 3] batch must have shape [2], got [2, 3]",
    ),
    "empty attribute": (f"{MODULE}:", {}, "a reference is 'module:function'"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_reference_exits_2_naming_target_name_and_the_file(fresh_imports, capsys, kind):
    name, kwargs, reason = BAD[kind]
    write_module(fresh_imports)
    study = write_study(fresh_imports, target={"name": name, "kwargs": kwargs})
    assert main(["train", str(study)]) == 2
    error = capsys.readouterr().err
    assert f"{study}: invalid study file" in error
    assert f"target.name: target {name!r}" in error and reason in error, error
    assert "Traceback" not in error


def test_bad_arguments_and_metrics_of_a_user_target_name_their_fields(fresh_imports, capsys):
    write_module(fresh_imports)
    target = f"{MODULE}:scaled_gaussian"
    study = write_study(fresh_imports, target={"name": target, "kwargs": {"dims": 3}})
    assert main(["train", str(study)]) == 2
    assert "target.kwargs: target" in capsys.readouterr().err
    study = write_study(fresh_imports, objective={"metric": "emc", "direction": "maximize"})
    assert main(["train", str(study)]) == 2
    assert "objective.0.metric: objective metric 'emc' needs a target with known modes" in (
        capsys.readouterr().err
    )


def test_the_custom_target_guide_example_trains_to_its_known_log_z(tmp_path):
    scales = [0.5 * 6.0 ** (i / 3) for i in range(4)]  # log-even from 0.5 to 3.0 (its kwargs)
    log_z = sum(math.log(math.sqrt(2 * math.pi) * s) for s in scales)
    trained = _train(EXAMPLE, tmp_path / "model", "--iterations", "30", *FAST)
    assert trained.config.target.name == "anisotropic:AnisotropicGaussian"
    _assert_estimates(trained, log_z)
    metrics = trained.evaluate().metrics
    assert metrics["sinkhorn"] < 1.0  # it has ground-truth samples too


def test_the_guide_shows_the_example_files_as_they_are():
    guide = (EXAMPLE.parents[2] / "docs" / "custom-targets.md").read_text()
    for path, language in ((EXAMPLE.with_suffix(".py"), "python"), (EXAMPLE, "yaml")):
        assert f"```{language}\n{path.read_text()}```" in guide, path.name
