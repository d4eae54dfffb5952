"""The compiled integration step (trainers/native.py): bitwise the same training as the Python
step for every sampler and option it serves, used where GMP_NATIVE says, and a warning (not a
failure) where it cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.configs import TINY_IMR, assert_same_parameters, tiny
from trainers import Trainer, native
from trainers.integrator import MIN_ROWS_PER_THREAD
from trainers.network import ControlNetwork
from trainers.prior import GaussianMixturePrior

ROWS = 2 * MIN_ROWS_PER_THREAD  # two row blocks
CASES: dict[str, dict[str, Any]] = {
    "dis, score fed, mixture grown by IMR": {"sampler": "dis", **TINY_IMR},
    "dis, no score, per-dim friction, tanh GELU": {
        "sampler": "dis",
        "network": {
            "hidden": 8,
            "n_time_features": 4,
            "use_target_score": False,
            "activation": "gelu_tanh",
        },
        "time": {"n_steps": 4, "per_dim_friction": True},
    },
    "mcd, mixture of three": {"sampler": "mcd", "prior": {"k_max": 3, "k_init": 3}},
    "cmcd, log-variance loss": {"sampler": "cmcd", "loss": "logvar"},
    "dbs": {"sampler": "dbs"},
    "dis, checkpointed steps": {"sampler": "dis", "checkpoint_steps": True},
}


def _trained(case: dict[str, Any], compiled_step: bool, monkeypatch: pytest.MonkeyPatch) -> Trainer:
    """A tiny trainer after 4 iterations on two threads, with the compiled step or with the
    Python step (both with the compiled GELU)."""
    _use_compiled_step(compiled_step, monkeypatch)
    trainer = Trainer(tiny(batch_size=ROWS, eval_samples=ROWS, **case), threads=2)
    trainer.train(4)
    return trainer


def _use_compiled_step(wanted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMP_NATIVE", "1")
    monkeypatch.setattr(native, "wanted", lambda device_type, row_blocks: wanted)


@pytest.fixture(scope="module")
def compiled() -> None:
    """The compiled step, built (or loaded from torch's cache) once for this module."""
    assert native.ops() is not None, "the compiled step did not build (see the warning)"


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_step_trains_bitwise_as_the_python_step(
    case: str, compiled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    python_step = _trained(CASES[case], False, monkeypatch)
    compiled_step = _trained(CASES[case], True, monkeypatch)
    assert_same_parameters(python_step, compiled_step)
    assert python_step.history == compiled_step.history
    generator = torch.Generator().manual_seed(3)
    x, log_w = compiled_step.sampler.sample(ROWS, generator, threads=2)
    _use_compiled_step(False, monkeypatch)
    x_python, log_w_python = python_step.sampler.sample(
        ROWS, torch.Generator().manual_seed(3), threads=2
    )
    assert torch.equal(x, x_python) and torch.equal(log_w, log_w_python)


@pytest.mark.parametrize(
    ("setting", "threads", "used"),
    [("auto", 1, False), ("auto", 2, True), ("0", 2, False), ("1", 1, True)],
)
def test_setting_chooses_where_the_compiled_step_runs(
    setting: str, threads: int, used: bool, compiled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    control = ControlNetwork.control

    def recording(self: ControlNetwork, *args: Any) -> torch.Tensor:
        seen.append(native.active() is not None)
        return control(self, *args)

    monkeypatch.setattr(ControlNetwork, "control", recording)
    monkeypatch.setenv("GMP_NATIVE", setting)
    Trainer(tiny(batch_size=ROWS, eval_samples=ROWS), threads=threads).train(1)
    assert seen and set(seen) == {used}


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_step_is_for_cpu_rollouts_split_over_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GMP_NATIVE", "auto")
    assert native.wanted("cpu", 2) and not native.wanted("cpu", 1)
    assert not native.wanted("cuda", 2)
    sampler = Trainer(tiny()).sampler
    assert sampler.uses_compiled_step(ROWS, 2) and not sampler.uses_compiled_step(ROWS // 2, 2)
    assert not Trainer(tiny(compile=True)).sampler.uses_compiled_step(ROWS, 2)  # torch.compile's
    monkeypatch.setenv("GMP_NATIVE", "yes")
    with pytest.raises(ValueError, match="GMP_NATIVE"):
        native.wanted("cpu", 2)


def test_a_machine_without_a_compiler_warns_and_keeps_the_python_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="could not build its compiled training step") as seen:
        assert native.build(native.SOURCE, "gmp_step_without_compiler") is None
    assert "no-such-compiler" in str(seen[0].message)  # the reason, not ninja's sign-off


@pytest.mark.parametrize("k_init", [1, 2, 4])
def test_prior_score_and_its_gradients_match_bitwise_with_inactive_slots(
    k_init: int, compiled: None
) -> None:
    prior = GaussianMixturePrior(4, 5, k_init, 1.0, 1.0, True, torch.Generator().manual_seed(0))
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    results = []
    for module in (None, native.ops()):
        with native.using(module):
            score = prior.score(x, prior.score_terms())
        grads = torch.autograd.grad(score.square().sum(), [x, prior.means, prior.raw_scales])
        results.append((score, *grads))
    for python_value, compiled_value in zip(*results, strict=True):
        assert torch.equal(python_value, compiled_value)


def test_compiled_gelu_has_the_exact_gelus_values_and_slopes(compiled: None) -> None:
    x = torch.cat([torch.linspace(-12, 12, 240_001), torch.tensor([0.0, -0.0, 1e-30, -1e-30])])
    exact = torch.nn.functional.gelu(x.double())
    exact_slope = torch.ops.aten.gelu_backward(torch.ones_like(exact), x.double())
    values = native.gelu(x, "none")
    x_grad = x.clone().requires_grad_()
    traced = native.gelu(x_grad, "none")
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    traced.backward(upstream)
    assert torch.equal(values, traced.detach())  # with or without a gradient to keep
    # Abramowitz and Stegun's erf, as torch's own CPU GELU: within 1.5e-7 of erf, times |x|
    assert (values.double() - exact).abs().max() < 5e-7
    assert (x_grad.grad.double() - upstream.double() * exact_slope).abs().max() < 1e-6 * (
        upstream.abs().max()
    )
    assert (values[x > 0] > 0).all()
    edges = native.gelu(torch.tensor([float("inf"), -50.0, 50.0, float("nan")]), "none")
    assert edges[0] == float("inf") and edges[1] == 0 and edges[2] == 50 and edges[3].isnan()


@pytest.mark.parametrize("setting", ["auto", "1", "0"])
def test_setting_chooses_the_gelu(
    setting: str, compiled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_NATIVE", setting)
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    compiled_gelu = native.ops().gelu(x, "none")
    torch_gelu = torch.nn.functional.gelu(x)
    assert not torch.equal(compiled_gelu, torch_gelu)  # they differ in the last bits
    expected = torch_gelu if setting == "0" else compiled_gelu
    assert torch.equal(native.gelu(x, "none"), expected)
    assert torch.equal(native.gelu(x.double(), "none"), torch.nn.functional.gelu(x.double()))
    tanh = torch.nn.functional.gelu(x, approximate="tanh")
    assert torch.equal(native.gelu(x, "tanh"), tanh)


def test_compiled_gelu_keeps_its_slope_in_a_temporary_input(compiled: None) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, generator=generator, requires_grad=True)
    x = torch.randn(300, 16, generator=generator)
    gradients = []
    for overwrite in (False, True):
        hidden = x @ weight  # a temporary, as the network's products are
        out = native.gelu(hidden, "none", overwrite_input=overwrite)
        (grad,) = torch.autograd.grad(out.square().sum(), weight)
        gradients.append((out, grad))
    assert torch.equal(gradients[0][0], gradients[1][0])
    assert torch.equal(gradients[0][1], gradients[1][1])
    # a node that saved the overwritten input refuses to run, rather than reading the slope
    hidden = x @ weight
    saved = hidden.square()
    out = native.gelu(hidden, "none", overwrite_input=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out + saved).sum().backward()
    with pytest.raises(RuntimeError, match="cannot overwrite a leaf"):
        native.gelu(weight, "none", overwrite_input=True)
