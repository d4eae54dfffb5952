"""Export folder from a trainer checkpoint (no Ray, no MLflow server): files, metadata, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import trainers
from storage.export import EXPORT_FILES, TrialSource, write_export
from storage.pyfunc_sampler import requests
from tests.configs import tiny
from trainers import Trainer

CONFIG = {
    "target": {"name": "gmm40", "kwargs": {"dim": 2, "n_modes": 4, "half_width": 8.0}},
    "eval_samples": 128,
    "seed": 3,
    "prior": {"k_max": 3, "init_std": 3.0},
}  # overrides of the tiny trainer


@pytest.fixture(scope="module")
def trained() -> Trainer:
    """A small trainer after a few iterations."""
    trainer = Trainer(tiny(**CONFIG))
    trainer.train(4)
    return trainer


def test_export_holds_the_model_its_provenance_and_reloads_to_the_same_sampler(
    trained: Trainer, tmp_path: Path
):
    checkpoint = trained.save(tmp_path / "checkpoint")
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "config.json"}
    evaluation = trained.evaluate()
    trial = TrialSource(
        study="unit",
        number=4,
        tune_trial_id="abc123",
        params={"prior.k_max": 3},
        objective={"elbo": evaluation.metrics["elbo"]},
    )
    out = write_export(checkpoint, tmp_path / "export", trial, evaluation.metrics)

    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    tensors = load_file(out / "model.safetensors")
    assert set(tensors) == {f"model/{k}" for k in trained.sampler.state_dict()} | {"iteration"}
    exported = json.loads((out / "config.json").read_text())
    assert exported["config"] == {**trained.config.model_dump(mode="json"), "device": "auto"}
    assert exported["model"] == {
        "target": "gmm40",
        "target_kwargs": CONFIG["target"]["kwargs"],
        "dim": 2,
        "sampler": "dis",
        "k_max": 3,
        "k_active": 3,
        "n_steps": 4,
        "time_horizon": pytest.approx(float(trained.sampler.schedule.horizon().detach())),
        "seed": 3,
        "iteration": 4,
        "dtype": "float32",
    }
    assert exported["versions"]["torch"] == torch.__version__
    assert exported["trial"]["number"] == 4 and exported["trial"]["study"] == "unit"
    assert exported["metrics"] == evaluation.metrics

    reloaded = trainers.load(out)
    assert reloaded.iteration == 4
    assert reloaded.evaluate().metrics == evaluation.metrics  # same parameters, same streams
    x, log_w = reloaded.sample(7)
    assert x.shape == (7, 2) and log_w.shape == (7,) and torch.isfinite(log_w).all()

    card = (out / "README.md").read_text()
    assert "study unit, trial 4" in card and "trainers.load(" in card
    assert f"| elbo | {evaluation.metrics['elbo']:.6g} |" in card

    with pytest.raises(FileExistsError, match="not empty"):
        write_export(checkpoint, out, trial, evaluation.metrics)


def test_loading_a_folder_without_model_files_names_the_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        trainers.load(tmp_path)


def test_pyfunc_requests_read_n_and_optional_seeds():
    frame = pd.DataFrame({"n": [3, 2], "seed": [1, None]})
    assert requests(frame) == [(3, 1), (2, None)]
    assert requests(pd.DataFrame({"n": [5]})) == [(5, None)]
    for bad in (pd.DataFrame({"n": [0]}), pd.DataFrame({"m": [1]}), pd.DataFrame({"n": [1.5]})):
        with pytest.raises(ValueError, match="'n'"):
            requests(bad)
