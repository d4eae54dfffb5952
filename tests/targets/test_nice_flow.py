"""The NICE flow's exact density (quadrature, brute-force Jacobians), IDX files, Fashion errors."""

import gzip
import struct

import numpy as np
import pytest
import torch
from scipy import stats

import targets
from targets.flows.config import Dequantisation, NiceArch
from targets.flows.images import FASHION_FILES, checkerboard_order, dequantise, read_idx
from targets.flows.nice import Nice


def _random_flow(dim: int, base: str, seed: int = 0) -> tuple[Nice, dict[str, torch.Tensor]]:
    """A small NICE with all parameters random (not the identity it starts as), float64."""
    flow = Nice(NiceArch(n_couplings=3, hidden=8, depth=2, base=base), dim)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(dim, generator=gen)
    params = flow.init(order, gen)
    for key, value in params.items():
        if value.is_floating_point():
            params[key] = value.double() + 0.4 * torch.randn(
                value.shape, generator=gen, dtype=torch.float64
            )
    return flow, params


@pytest.mark.parametrize(("base", "half_width"), [("gaussian", 12.0), ("logistic", 40.0)])
def test_two_dim_density_integrates_to_one(base, half_width):
    flow, params = _random_flow(2, base)
    step = 0.05
    axis = torch.arange(-half_width, half_width, step, dtype=torch.float64) + step / 2
    total = 0.0
    for chunk in axis.split(500):
        xx, yy = torch.meshgrid(chunk, axis, indexing="ij")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        total += torch.exp(flow.log_prob(params, pts)).sum().item()
    assert total * step**2 == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("dim", [5, 6])
def test_inverse_and_forward_are_inverse(dim):
    flow, params = _random_flow(dim, "gaussian")
    x = torch.randn(50, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(flow.inverse(params, flow.forward(params, x)), x)
    torch.testing.assert_close(flow.forward(params, flow.inverse(params, x)), x)


@pytest.mark.parametrize("base", ["gaussian", "logistic"])
def test_log_prob_is_base_density_plus_brute_force_log_det(base):
    flow, params = _random_flow(7, base)
    logpdf = stats.norm.logpdf if base == "gaussian" else stats.logistic.logpdf
    for x in flow.sample(params, 3, torch.Generator().manual_seed(2)):
        jac = torch.autograd.functional.jacobian(lambda v: flow.forward(params, v[None])[0], x)
        z = flow.forward(params, x[None])[0].numpy()
        expected = logpdf(z).sum() + np.linalg.slogdet(jac.numpy())[1]
        assert flow.log_prob(params, x[None]).item() == pytest.approx(expected, rel=1e-10)


def test_samples_follow_the_base_through_the_flow():
    flow, params = _random_flow(4, "logistic")
    x = flow.sample(params, 20_000, torch.Generator().manual_seed(3))
    z = flow.forward(params, x).numpy()
    # Every latent coordinate is standard logistic: Kolmogorov-Smirnov on each.
    assert min(stats.kstest(z[:, i], stats.logistic.cdf).pvalue for i in range(4)) > 1e-3


def test_checkerboard_order_puts_even_squares_first():
    order = checkerboard_order((3, 4)).tolist()
    rows, cols = np.divmod(order, 4)
    assert sorted(order) == list(range(12))
    assert list((rows + cols) % 2) == [0] * 6 + [1] * 6


def test_dequantise_maps_levels_into_their_logit_bins():
    pixels = torch.arange(256).repeat(40, 1)
    config = Dequantisation(levels=8, alpha=0.05)
    y = dequantise(pixels, 255, config, torch.Generator().manual_seed(0))
    unit = (torch.sigmoid(y.double()) - 0.05) / 0.9
    level = torch.arange(256) // 32  # 3 bits: 32 intensities per level
    assert torch.all(unit >= level / 8 - 1e-6) and torch.all(unit <= (level + 1) / 8 + 1e-6)


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_read_idx_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28))
    _write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), array)
    (tmp_path / "bad").write_bytes(b"not an idx file")
    with pytest.raises(targets.DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_fashion_missing_files_name_the_file_and_source(tmp_path, monkeypatch):
    with pytest.raises(targets.DataError, match=r"train-images-idx3-ubyte\.gz.*zalandoresearch"):
        targets.make("fashion", data_dir=str(tmp_path))
    _write_idx(tmp_path / FASHION_FILES[0], np.zeros((2, 28, 28)))
    with pytest.raises(targets.DataError, match=r"train-labels-idx1-ubyte\.gz"):
        targets.make("fashion", data_dir=str(tmp_path))
    monkeypatch.delenv("GMP_DATA_DIR", raising=False)
    with pytest.raises(targets.DataError, match="GMP_DATA_DIR is not set"):
        targets.make("fashion")


def test_fashion_trains_from_idx_files(tmp_path, monkeypatch):
    """The whole Fashion path on 100 synthetic images: a 784-d normalised flow with 10 modes."""
    monkeypatch.setenv("GMP_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    _write_idx(tmp_path / FASHION_FILES[0], rng.integers(0, 256, size=(100, 28, 28)))
    _write_idx(tmp_path / FASHION_FILES[1], np.arange(100) % 10)
    tiny = {
        "flow": {"n_couplings": 2, "hidden": 16, "depth": 1},
        "flow_fit": {"steps": 5, "batch_size": 20},
        "classifier": {"hidden": 16, "depth": 1},
        "classifier_fit": {"steps": 5, "batch_size": 20},
    }
    fashion = targets.make("fashion", data_dir=str(tmp_path), config=tiny)
    assert (fashion.dim, fashion.n_modes, fashion.log_Z) == (784, 10, 0.0)
    assert fashion.config.dequantisation.levels == 8  # the Fashion recipe, overridden in part
    x = fashion.sample(4, torch.Generator().manual_seed(0))
    assert torch.isfinite(fashion.log_prob(x)).all()
    assert fashion.mode_of(x).shape == (4,)
