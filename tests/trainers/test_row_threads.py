"""Rollouts split over threads by rows: the same trajectories, random draws and target counts as
one thread, the same training up to rounding, and bitwise the same for the same thread count."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.configs import TINY_IMR, assert_same_parameters, tiny
from trainers import Trainer
from trainers.integrator import MIN_ROWS_PER_THREAD, RolloutNoise, in_parallel, row_blocks
from trainers.prior import GaussianMixturePrior

ROWS = 3 * MIN_ROWS_PER_THREAD  # enough rows for three threads


def _config(**overrides):
    return tiny(batch_size=ROWS, eval_samples=ROWS, **overrides)


def test_row_blocks_cover_the_batch_once_and_small_batches_stay_whole() -> None:
    blocks = row_blocks(1000, 3)
    assert [(b.start, b.stop) for b in blocks] == [(0, 333), (333, 666), (666, 1000)]
    assert row_blocks(MIN_ROWS_PER_THREAD * 2 - 1, 4) == [slice(0, 2 * MIN_ROWS_PER_THREAD - 1)]
    assert len(row_blocks(10_000, 2)) == 2


def test_noise_read_by_threads_at_different_paces_is_the_one_thread_stream() -> None:
    """Readers that run ahead of or behind each other, with one far ahead of the rest, read
    exactly the draws one reader gets, and leave the generator where one reader leaves it; the
    noise's energy sum_n |eps_n|^2 is each row's, in the order one reader would add it."""
    prior = GaussianMixturePrior(2, 3, 2, 1.0, 1.0, True, torch.Generator().manual_seed(0))
    n, n_steps, readers = 4000, 40, 4
    alone_generator = torch.Generator().manual_seed(5)
    alone = RolloutNoise(prior, n, n_steps, alone_generator, 1)
    expected = [alone.step(i, slice(0, n)) for i in range(n_steps)]
    generator = torch.Generator().manual_seed(5)
    shared = RolloutNoise(prior, n, n_steps, generator, readers, energy=True)
    blocks = row_blocks(n, readers)
    lockstep = threading.Barrier(readers)
    half = n_steps // 2

    def read(block: slice) -> list[torch.Tensor]:
        out = []
        for i in range(n_steps):
            if i < half:  # every reader asks for step i at the same moment
                lockstep.wait()
            elif i == half and block.start:  # the first reader runs on ahead, alone
                time.sleep(0.05)
            out.append(shared.step(i, block))
        return out

    got = in_parallel(read, blocks)
    energy = torch.zeros(n)
    for eps in expected:
        energy += eps.square().sum(-1)
    for block, steps in zip(blocks, got, strict=True):
        for i, eps in enumerate(steps):
            assert torch.equal(eps, expected[i][block]), (block, i)
        assert torch.equal(shared.energy(block), energy[block])  # drawn once, for all rows
    assert torch.equal(generator.get_state(), alone_generator.get_state())
    assert torch.equal(shared.initial, alone.initial)


@pytest.mark.parametrize("sampler", ["dis", "cmcd"])
def test_threads_draw_the_same_trajectories_as_one(sampler: str) -> None:
    trainer = Trainer(_config(sampler=sampler, prior={"k_max": 3, "k_init": 3}))
    rollouts = {}
    for threads in (1, 3):
        with torch.no_grad():
            generator = torch.Generator().manual_seed(4)
            rollouts[threads] = trainer.sampler.rollout(ROWS, generator, threads=threads)
    one, three = rollouts[1], rollouts[3]
    assert torch.equal(one.components, three.components)  # the same draws, row for row
    torch.testing.assert_close(three.x, one.x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(three.log_weights, one.log_weights, rtol=1e-5, atol=1e-4)


def test_training_on_threads_matches_one_thread_and_repeats_bitwise() -> None:
    runs = {}
    for name, threads in (("one", 1), ("three", 3), ("three again", 3)):
        trainer = Trainer(_config(**TINY_IMR), threads=threads)
        trainer.train(4)
        runs[name] = trainer
    one, three, again = runs["one"], runs["three"], runs["three again"]
    assert three.history == again.history
    assert_same_parameters(three, again)
    assert three.prior.n_active == one.prior.n_active == 3  # IMR ran on both
    for key in ("loss", "elbo"):
        torch.testing.assert_close(
            torch.tensor(three.history[key]), torch.tensor(one.history[key]), rtol=1e-4, atol=1e-4
        )
    for name, param in one.sampler.named_parameters():
        other = dict(three.sampler.named_parameters())[name]
        torch.testing.assert_close(other, param, rtol=1e-3, atol=1e-4, msg=name)
    # every thread's target evaluations are counted: one per trajectory and point
    assert three.counted_target.evaluations == one.counted_target.evaluations > 0
