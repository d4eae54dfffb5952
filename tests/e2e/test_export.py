"""`gmp export` on a real finished study: a bare-torch reload, the trial's metrics, the registry."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

import trainers
from orchestrator.cli import main
from orchestrator.driver import StudyLocations, run_study
from orchestrator.spec import load_spec
from storage.optuna_storage import TUNE_ID_ATTR, load_study
from storage.runs import ROLE_TAG, STUDY_TAG, TRIAL_TAG
from tests.conftest import records_root
from tests.e2e.conftest import SMALL_STUDY, study_file

pytestmark = pytest.mark.slow

STUDY, MODEL = "export", "gmp-export-e2e"
N_FRESH = 4000
# Loads the export with torch and the package's trainers only; prints what it drew.
BARE_LOAD = """
import json, sys, torch, trainers
model = trainers.load(sys.argv[1])
recorded = model.evaluate().metrics  # the trial's own evaluation stream at this iteration
x, log_w = model.sample(int(sys.argv[2]), torch.Generator().manual_seed(12345))
print(json.dumps({
    "modules": sorted(m for m in ("mlflow", "ray", "optuna", "pyarrow") if m in sys.modules),
    "shape": list(x.shape),
    "log_w": log_w.double().tolist(),
    "evaluate": recorded,
}))
"""


@pytest.fixture(scope="module")
def study(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path
) -> tuple[Path, StudyLocations, Path]:
    """A finished two-trial study: its records root, storage locations and study file."""
    folder = tmp_path_factory.mktemp("export-study")
    file = study_file(
        folder,
        name=STUDY,
        scheduler={"type": "none"},
        budget={"trials": 2, "iterations": 20, "eval_interval": 10},
    )
    spec = load_spec(file)
    root = records_root(folder, mlflow_store_template)
    run_study(spec, file.read_text(), root=root, num_cpus=2, verbose=0)
    return root, StudyLocations.resolve(spec, root), file


def _trial_run(client: MlflowClient, tune_id: str):
    experiment = client.get_experiment_by_name(STUDY)
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{tune_id}' and tags.`{ROLE_TAG}` = 'trial'",
    )
    return run


def test_best_trial_reloads_with_torch_alone_and_reproduces_its_metrics(study, tmp_path: Path):
    root, where, file = study
    out = tmp_path / "best"
    assert main(["export", str(file), "--root", str(root), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]

    best = load_study(where.optuna_url, STUDY).best_trial
    exported = json.loads((out / "config.json").read_text())
    assert exported["trial"]["number"] == best.number
    assert exported["trial"]["objective"] == {"elbo": best.value}
    run = _trial_run(MlflowClient(where.mlflow_uri), best.user_attrs[TUNE_ID_ATTR])
    recorded = run.data.metrics  # the last evaluation, at the checkpoint's iteration
    assert exported["model"]["iteration"] == 20 == exported["metrics"]["training_iteration"] * 10
    assert {k: exported["metrics"][k] for k in recorded} == recorded

    bare = subprocess.run(
        [sys.executable, "-c", BARE_LOAD, str(out), str(N_FRESH)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    drawn = json.loads(bare.stdout.splitlines()[-1])
    assert drawn["modules"] == [] and drawn["shape"] == [N_FRESH, 2]
    # The same evaluation stream: the trial's numbers up to float32 summation order.
    for metric in ("elbo", "log_z", "ess", "emc", "sinkhorn"):
        assert drawn["evaluate"][metric] == pytest.approx(recorded[metric], rel=1e-4, abs=1e-5)

    # Fresh samples: ELBO and log Z agree with the recorded ones within Monte-Carlo error.
    log_w = np.asarray(drawn["log_w"])
    m = SMALL_STUDY["fixed"]["eval_samples"]
    elbo, sd = log_w.mean(), log_w.std(ddof=1)
    assert abs(elbo - recorded["elbo"]) <= 4 * sd * math.sqrt(1 / N_FRESH + 1 / m)
    w = np.exp(log_w - log_w.max())
    v = np.mean(w**2) / np.mean(w) ** 2 - 1  # relative variance of one weight
    log_z = math.log(np.mean(w)) + log_w.max()
    # delta-method standard errors, plus the log's downward bias v / 2m of the 256-sample estimate
    assert abs(log_z - recorded["log_z"]) <= 4 * math.sqrt(v / N_FRESH + v / m) + v / (2 * m)


def test_chosen_trial_is_registered_as_a_champion_pyfunc_loaded_without_pickle(
    study, tmp_path: Path
):
    root, where, _ = study
    optuna_study = load_study(where.optuna_url, STUDY)
    other = next(t for t in optuna_study.trials if t.number != optuna_study.best_trial.number)
    out = tmp_path / "other"
    args = ["export", STUDY, "--trial", str(other.number), "--root", str(root), "--out", str(out)]
    assert main([*args, "--register", MODEL]) == 0
    exported = json.loads((out / "config.json").read_text())
    assert exported["trial"]["number"] == other.number
    assert exported["trial"]["params"] == other.params

    client = MlflowClient(where.mlflow_uri, registry_uri=where.mlflow_uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.run_id == _trial_run(client, other.user_attrs[TUNE_ID_ATTR]).info.run_id
    assert version.tags[STUDY_TAG] == STUDY and "champion" in version.aliases

    mlflow.set_tracking_uri(where.mlflow_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion"))
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert "model_code_path" in flavor and "python_model" not in flavor
    assert not [p for p in local.rglob("*") if p.suffix in {".pkl", ".pickle", ".pt", ".pth"}]

    drawn = model.predict(pd.DataFrame({"n": [30, 30, 5], "seed": [7, 7, 8]}))
    assert list(drawn.columns) == ["request", "x0", "x1", "log_weight"]
    assert drawn.groupby("request").size().to_dict() == {0: 30, 1: 30, 2: 5}
    first, second = (drawn[drawn.request == r].drop(columns="request") for r in (0, 1))
    assert np.array_equal(first.to_numpy(), second.to_numpy())  # same seed, same draws
    unseeded = [model.predict({"n": 4}) for _ in range(2)]
    assert all(frame.shape == (4, 4) for frame in unseeded)
    assert not np.array_equal(unseeded[0].to_numpy(), unseeded[1].to_numpy())  # fresh draws
    x, log_w = trainers.load(out).sample(30, torch.Generator().manual_seed(7))
    assert np.allclose(first[["x0", "x1"]].to_numpy(), x.double().numpy(), atol=1e-6)
    assert np.allclose(first["log_weight"].to_numpy(), log_w.double().numpy(), atol=1e-5)


def test_unknown_study_or_trial_is_bad_input_and_a_trial_without_checkpoint_fails(
    study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    root, where, _ = study
    base = ["--root", str(root), "--out", str(tmp_path / "out")]
    assert main(["export", STUDY, "--trial", "99", *base]) == 2
    assert "no trial 99 in study 'export'" in capsys.readouterr().err
    assert main(["export", "nope", *base]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("")
    assert main(["export", STUDY, "--root", str(root), "--out", str(tmp_path / "used")]) == 2
    assert "not empty" in capsys.readouterr().err

    # A trial that has started (Optuna trial, MLflow run) but not yet logged a checkpoint.
    started = load_study(where.optuna_url, STUDY).ask()
    started.set_user_attr(TUNE_ID_ATTR, "started")
    client = MlflowClient(where.mlflow_uri)
    client.create_run(
        client.get_experiment_by_name(STUDY).experiment_id,
        tags={STUDY_TAG: STUDY, TRIAL_TAG: "started", ROLE_TAG: "trial"},
    )
    assert main(["export", STUDY, "--trial", str(started.number), *base]) == 1
    assert f"trial {started.number} (started, RUNNING)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
