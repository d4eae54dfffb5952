"""IMR on a 2-d mixture of four separated modes: K components cover them, one Gaussian does not."""

import pytest

from tests.configs import mixture
from trainers import Trainer

pytestmark = pytest.mark.slow


def _train(k_max: int, imr: bool) -> tuple[Trainer, dict[str, float]]:
    config = mixture(
        prior={"k_max": k_max, "init_std": 2.0},
        imr={"enabled": imr, "interval": 60, "mala": {"n_chains": 32, "n_steps": 100}},
    )
    calls: list[int] = []

    def recording_map(fn, items):
        items = list(items)
        calls.append(len(items))
        return map(fn, items)

    trainer = Trainer(config, executor=recording_map)
    trainer.train(300)
    trainer.calls = calls
    return trainer, trainer.evaluate().metrics


def test_imr_covers_the_modes_where_a_learned_gaussian_does_not():
    gaussian, gaussian_metrics = _train(1, imr=False)
    mixture, mixture_metrics = _train(4, imr=True)
    assert mixture_metrics["emc"] >= 0.9
    assert gaussian_metrics["emc"] < 0.75
    assert mixture_metrics["elbo"] > gaussian_metrics["elbo"]
    # IMR at iterations 60, 120, 180: one work item per component active at that moment.
    assert [e["iteration"] for e in mixture.imr_events] == [60, 120, 180]
    assert [e["n_work_items"] for e in mixture.imr_events] == [1, 2, 3]
    assert mixture.calls == [1, 2, 3] and gaussian.calls == []
    assert mixture.prior.n_active == 4
