"""The `digits` target: a NICE flow trained on scikit-learn's digits, its classifier and cache.

Trained once per module with a reduced recipe into a temporary cache (the default recipe takes
about 30 s on one core; its numbers are in the target's `report`).
"""

import os

import numpy as np
import pytest
import torch
from scipy import stats

import targets
import targets.image_flows
from targets.flows.config import ImageFlowConfig
from targets.flows.images import dequantise, load_digits
from targets.flows.training import split_indices, train_image_flow

SMALL = {
    "flow": {"n_couplings": 4, "hidden": 64},
    "flow_fit": {"steps": 300},
    "classifier": {"hidden": 64, "depth": 1},
    "classifier_fit": {"steps": 300},
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The reduced digits target, trained into a fresh cache (one thread: the CI box is shared)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GMP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield targets.make("digits", config=SMALL)
        finally:
            torch.set_num_threads(threads)


def test_is_a_normalised_64_dim_target_with_ten_modes(digits):
    assert (digits.dim, digits.n_modes, digits.log_Z, digits.has_samples) == (64, 10, 0.0, True)
    assert digits.config.flow.hidden == 64 and digits.config.flow.depth == 2  # merged recipe


def test_log_prob_of_samples_is_base_density_plus_brute_force_log_det(digits):
    x = digits.sample(3, torch.Generator().manual_seed(0))
    params = digits.model_params("flow", x)
    for point in x:
        jac = torch.autograd.functional.jacobian(
            lambda v: digits.flow.forward(params, v[None])[0], point
        )
        z = digits.flow.forward(params, point[None])[0].numpy()
        expected = stats.norm.logpdf(z).sum() + np.linalg.slogdet(jac.numpy())[1]
        assert digits.log_prob(point[None]).item() == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(digits.flow.inverse(params, digits.flow.forward(params, x)), x)


def test_gradcheck_float64(digits):
    x = digits.sample(2, torch.Generator().manual_seed(1)).requires_grad_(True)
    assert torch.autograd.gradcheck(digits.log_prob, (x,))


def test_float32_and_batching_agree_with_float64(digits):
    x = digits.sample(10, torch.Generator().manual_seed(2))
    lp64, score64 = digits.log_prob_and_score(x)
    lp32, score32 = digits.log_prob_and_score(x.float())
    assert lp32.dtype == torch.float32 and lp64.shape == (10,)
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(score32.double(), score64, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(torch.cat([digits.log_prob(r[None]) for r in x]), lp64)


def test_classifier_accuracy_on_held_out_digits(digits):
    data = load_digits()
    _, held_out = split_indices(len(data.images), digits.config)
    x = dequantise(
        torch.from_numpy(data.images[held_out.numpy()]),
        data.max_value,
        digits.config.dequantisation,
        torch.Generator().manual_seed(3),
    )
    accuracy = (digits.mode_of(x).numpy() == data.labels[held_out.numpy()]).mean()
    assert accuracy > 0.9
    assert digits.report["classifier_test_accuracy"] > 0.9


def test_samples_cover_all_ten_classes(digits):
    counts = torch.bincount(digits.mode_of(digits.sample(2000, torch.Generator().manual_seed(4))))
    assert len(counts) == 10 and counts.min().item() >= 50  # each class at least 2.5 %


def test_second_construction_reads_the_cache(digits, monkeypatch, tmp_path):
    monkeypatch.setenv("GMP_CACHE_DIR", str(digits.model_dir.parent.parent))
    weights = digits.model_dir / "model.safetensors"
    stamp = os.stat(weights).st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(targets.image_flows, "train_image_flow", must_not_train)
    again = targets.make("digits", config=SMALL)
    assert again.model_dir == digits.model_dir and os.stat(weights).st_mtime_ns == stamp
    x = digits.sample(5, torch.Generator().manual_seed(5))
    torch.testing.assert_close(again.log_prob(x), digits.log_prob(x), rtol=0, atol=0)
    # Another recipe is another model: it would train (and here fails loudly).
    with pytest.raises(AssertionError, match="trained again"):
        targets.make("digits", config={**SMALL, "seed": 1})


def test_training_is_deterministic_for_a_seed():
    config = ImageFlowConfig.model_validate(
        {**SMALL, "flow_fit": {"steps": 20}, "classifier_fit": {"steps": 20}}
    )
    data = load_digits()
    first, _ = train_image_flow(data, config)
    second, _ = train_image_flow(data, config)
    other, _ = train_image_flow(data, config.model_copy(update={"seed": 1}))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["flow.log_scale"], other["flow.log_scale"])


def test_registered_with_its_facts_and_a_bad_recipe_is_a_target_error():
    facts = targets.info("digits")
    assert facts.log_Z and facts.samples and facts.modes
    assert {"digits", "fashion", "lgcp"} <= set(targets.names())
    with pytest.raises(targets.TargetError, match="hidden"):
        targets.make("digits", config={"flow": {"hidden": 0}})
