"""The Euler–Maruyama integrator shared by every diffusion sampler, with its log weights.

State x_0 ~ p_phi, then x_{n+1} = x_n + eta_n (a_n(x_n) + u_n(x_n)) + sqrt(2 eta_n) eps_n, and

    log w = log rho(x_N) - log p_phi(x_0) + sum_n [log B_n(x_n | x_{n+1}) - log F_n(x_{n+1} | x_n)]

with B_n(x_n | x_{n+1}) = N(x_n; x_{n+1} + eta_n (a_{n+1} + v_{n+1})(x_{n+1}), 2 eta_n I)
(PAPER.md §1). Forward and backward kernels share the covariance 2 eta_n I, so their
normalising constants cancel and are never computed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from targets.base import Target
from trainers import native
from trainers.config import TrainerConfig
from trainers.metrics import ELBO, ESS, LOG_Z, elbo, ess, log_z_estimate
from trainers.network import TimeTerms
from trainers.prior import GaussianMixturePrior, ScoreTerms
from trainers.time_schedule import TimeSchedule

Loss = Literal["rkl", "logvar"]


class Rollout(NamedTuple):
    """A batch of simulated trajectories: final states, log weights, prior components of x_0."""

    x: Tensor  # [B, d]
    log_weights: Tensor  # [B]
    components: Tensor  # [B], long


class StepTerms(NamedTuple):
    """What the steps of a rollout share, computed once before it: time-only tensors, each
    [N + 1, ...] (point n takes row n, see `rows`), and parameter-only terms that every point
    takes whole; None where the sampler has no such term."""

    beta: Tensor | None = None  # annealing beta_n of the base drift [N + 1]
    forward: TimeTerms | None = None  # the forward control network's time terms
    backward: TimeTerms | None = None  # the backward control network's time terms
    prior: ScoreTerms | None = None  # the prior score's parameter terms (every point)

    def rows(self, n_points: int) -> list[StepTerms]:
        """Row n of every time-only term, for points n = 0..n_points - 1."""
        return _rows(self, n_points)


def _rows(value: Any, n_points: int) -> list[Any]:
    """The rows of `value`: [n_points, ...] tensors in nested named tuples are split, None and
    any other value (a term shared by all rows, such as a frozen dataclass) repeated."""
    if isinstance(value, Tensor):
        return list(value.unbind(0))
    if isinstance(value, tuple):
        fields = [_rows(field, n_points) for field in value]
        return [type(value)(*row) for row in zip(*fields, strict=True)]
    return [value] * n_points


class StepInto(NamedTuple):
    """Step n - 1's coefficients, as the backward kernel into point n needs them."""

    eta: Tensor
    minus_quarter_inv_eta: Tensor  # -1 / (4 eta): log B's sign folded in, one operator fewer


class StepOut(NamedTuple):
    """Step n's coefficients, as the forward kernel out of point n needs them."""

    eta: Tensor
    noise_scale: Tensor  # sqrt(2 eta)
    quarter_inv_eta: Tensor  # 1 / (4 eta)


class _LogProbWithScore(torch.autograd.Function):
    """log rho(x) as a function of x, from its precomputed value and gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, log_prob: Tensor, score: Tensor) -> Tensor:
        ctx.save_for_backward(score)
        return log_prob.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (score,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * score, None, None


def _scaled_sq_norm(residual: Tensor, scale: Tensor) -> Tensor:
    """sum_i scale_i residual_i^2 per row, for a scalar or per-dimension scale."""
    if scale.dim() == 0:
        return residual.square().sum(-1) * scale
    return residual.square() @ scale


def point_update(
    x_prev: Tensor | None,
    x: Tensor,
    drift: Tensor,
    u: Tensor | None,
    v: Tensor | None,
    eps: Tensor | None,
    into_eta: Tensor | None,
    minus_quarter_inv_eta: Tensor | None,
    out_eta: Tensor | None,
    noise_scale: Tensor | None,
    quarter_inv_eta: Tensor | None,
    detach: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """x_next and point n's share of log w that depends on the parameters, from the base drift
    and the controls at x = x_n: log B_{n-1}(x_prev | x) - log F_n(x_next | x), less what
    `Sampler._integrate` adds outside the graph (without `detach`, -log F_n(x_next | x) =
    |eps_n|^2 / 2).

    The step into point n (`StepInto`'s fields) is None at n = 0, the step out of it
    (`StepOut`'s) None at n = N, where there is no next state; the log-w share is None where
    nothing is left of it. native_step.cpp holds this function's compiled twin.
    """
    log_backward = None
    if into_eta is not None:
        assert x_prev is not None and minus_quarter_inv_eta is not None
        mean_prev = torch.addcmul(x, into_eta, drift if v is None else drift + v)
        log_backward = _scaled_sq_norm(x_prev - mean_prev, minus_quarter_inv_eta)
    if out_eta is None:
        return None, log_backward
    assert noise_scale is not None and eps is not None and quarter_inv_eta is not None
    mean_next = torch.addcmul(x, out_eta, drift if u is None else drift + u)
    x_next = torch.addcmul(mean_next, noise_scale, eps)
    if not detach:
        return x_next, log_backward
    x_next = x_next.detach()
    minus_log_forward = _scaled_sq_norm(x_next - mean_next, quarter_inv_eta)
    if log_backward is None:
        return x_next, minus_log_forward
    return x_next, log_backward + minus_log_forward


def draw_noise(like: Tensor, generator: torch.Generator | None, energy: Tensor | None) -> Tensor:
    """eps ~ N(0, I) shaped like `like`, adding each row's |eps|^2 to `energy` (in place) where
    given. native_step.cpp holds this function's compiled twin."""
    eps = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    if energy is not None:
        energy += eps.square().sum(-1)
    return eps


@dataclass(frozen=True)
class IntegratorOptions:
    """How a sampler integrates and what it minimises: loss, step checkpointing, compilation."""

    loss: Loss = "rkl"
    checkpoint_steps: bool = False
    compile_step: bool = False

    @classmethod
    def from_config(cls, config: TrainerConfig) -> IntegratorOptions:
        """The options a trainer configuration asks for."""
        return cls(config.loss, config.checkpoint_steps, config.compile)


class Sampler(nn.Module):
    """A diffusion sampler: one shared integrator plus a per-sampler definition.

    Subclasses fill in the definition table of PAPER.md §1 (`base_drift` a_n, `forward_control`
    u and `backward_control` v, each given point n's row of `step_terms`) and set
    `needs_target_score` when any of them reads the target score; `controls` may be overridden
    where u and v share work.
    The target is evaluated once per point, outside any graph: `score` for the controls at
    x_0..x_{N-1} (when needed) and the fused `log_prob_and_score` at x_N, whose score is the
    gradient of log rho(x_N). Losses: "rkl" = -mean(log w) through the reparameterised
    trajectory (the negative ELBO); "logvar" = Var(log w) with the trajectory detached.
    `checkpoint_steps` recomputes each point in the backward pass instead of storing its
    intermediates; `compile_step` compiles the per-point function (never the unrolled loop).
    """

    needs_target_score: bool = True

    def __init__(
        self,
        prior: GaussianMixturePrior,
        target: Target,
        schedule: TimeSchedule,
        options: IntegratorOptions | None = None,
    ) -> None:
        super().__init__()
        options = options or IntegratorOptions()
        if options.loss not in ("rkl", "logvar"):
            raise ValueError(f"unknown loss {options.loss!r}")
        self.prior = prior
        self.schedule = schedule
        self.target = target
        self.loss_kind = options.loss
        self.checkpoint_steps = options.checkpoint_steps
        self.compile_step = options.compile_step
        step: Callable[..., tuple[Tensor | None, Tensor]] = self._point
        self._step = torch.compile(step, dynamic=False) if options.compile_step else step

    # The definition table: what distinguishes one sampler from another.
    def step_terms(self) -> StepTerms:
        """Time-only tensors [N + 1, ...] computed once per rollout; row n goes to point n."""
        return StepTerms()

    def base_drift(self, x: Tensor, target_score: Tensor | None, terms: StepTerms) -> Tensor:
        """a_n(x) at the states `x` of point n."""
        raise NotImplementedError

    def forward_control(
        self, x: Tensor, target_score: Tensor | None, terms: StepTerms
    ) -> Tensor | None:
        """u_n(x); None for none."""
        return None

    def backward_control(
        self, x: Tensor, target_score: Tensor | None, terms: StepTerms
    ) -> Tensor | None:
        """v_n(x); None for none."""
        return None

    def controls(
        self,
        x: Tensor,
        target_score: Tensor | None,
        terms: StepTerms,
        forward: bool,
        backward: bool,
    ) -> tuple[Tensor | None, Tensor | None]:
        """(u_n(x) if `forward`, v_n(x) if `backward`), None where not asked for or none."""
        u = self.forward_control(x, target_score, terms) if forward else None
        v = self.backward_control(x, target_score, terms) if backward else None
        return u, v

    # The shared integrator.
    def _point(
        self,
        x_prev: Tensor | None,
        x: Tensor,
        target_score: Tensor | None,
        eps: Tensor | None,
        into: StepInto | None,
        out: StepOut | None,
        terms: StepTerms,
        detach: bool,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Everything at point n: x_next and the point's share of log w that depends on the
        parameters (`point_update`). `into` is None at n = 0, `out` None at n = N."""
        drift = self.base_drift(x, target_score, terms)
        u, v = self.controls(x, target_score, terms, out is not None, into is not None)
        compiled = native.active()
        update = point_update if compiled is None else compiled.point_update
        return update(
            x_prev, x, drift, u, v, eps, *(into or (None, None)), *(out or (None,) * 3), detach
        )

    def rollout(
        self,
        n: int,
        generator: torch.Generator | None,
        *,
        detach: bool = False,
        threads: int = 1,
    ) -> Rollout:
        """Simulate `n` trajectories; `detach` stops gradients through the states.

        `threads` CPU threads integrate row blocks of the batch at once (`row_blocks`); the
        trajectories are the same for any count, up to floating-point rounding.
        """
        parts = self._rollout_parts(n, generator, detach, threads)
        if len(parts) == 1:
            return parts[0]
        return Rollout(*(torch.cat(fields) for fields in zip(*parts, strict=True)))

    def _rollout_parts(
        self, n: int, generator: torch.Generator | None, detach: bool, threads: int
    ) -> list[Rollout]:
        """The rollouts of `n` trajectories' row blocks, integrated in parallel threads."""
        blocks = self._row_blocks(n, threads)
        noise = RolloutNoise(
            self.prior, n, self.schedule.n_steps, generator, len(blocks), energy=not detach
        )
        compiled = native.ops() if self.uses_compiled_step(n, threads) else None

        def integrate(rows: slice) -> Rollout:
            with native.using(compiled):
                return self._integrate(noise, rows, detach)

        return in_parallel(integrate, blocks)

    def _row_blocks(self, n: int, threads: int) -> list[slice]:
        """The row blocks of a rollout of `n` trajectories (one block off the CPU)."""
        return row_blocks(n, threads if self.prior.means.device.type == "cpu" else 1)

    def uses_compiled_step(self, n: int, threads: int) -> bool:
        """Whether a rollout of `n` trajectories on `threads` threads runs the compiled step
        (trainers/native.py; never with `compile_step`)."""
        device = self.prior.means.device.type
        return not self.compile_step and native.wanted(device, len(self._row_blocks(n, threads)))

    def _integrate(self, noise: RolloutNoise, rows: slice, detach: bool) -> Rollout:
        """The trajectories of rows `rows` of a rollout whose random draws are `noise`."""
        components = noise.components[rows]
        x = self.prior.place(components, noise.initial[rows])
        if detach:
            x = x.detach()
        log_weight_terms = [-self.prior.log_prob(x)]
        eta = self.schedule.eta()
        etas, noise_scales = eta.unbind(0), torch.sqrt(2 * eta).unbind(0)
        quarter_inv_etas = (0.25 / eta).unbind(0)
        minus_quarter_inv_etas = (-0.25 / eta).unbind(0)
        n_steps = len(etas)
        term_rows = self.step_terms().rows(n_steps + 1)
        x_prev = log_rho = score = None
        for i in range(n_steps + 1):
            last = i == n_steps
            if last:  # log rho(x_N) enters log w; its gradient comes from the same call
                log_rho, score = self.target.log_prob_and_score(x.detach())
            elif self.needs_target_score:
                score = self.target.score(x.detach())
            eps = out = into = None
            if not last:
                eps = noise.step(i, rows)
                out = StepOut(etas[i], noise_scales[i], quarter_inv_etas[i])
            if i:
                into = StepInto(etas[i - 1], minus_quarter_inv_etas[i - 1])
            args = (x_prev, x, score, eps, into, out, term_rows[i], detach)
            if self.checkpoint_steps and torch.is_grad_enabled():
                x_next, delta = checkpoint(
                    self._step, *args, use_reentrant=False, preserve_rng_state=False
                )
            else:
                x_next, delta = self._step(*args)
            if delta is not None:
                log_weight_terms.append(delta)
            if not last:
                x_prev, x = x, x_next
        log_weights = torch.stack(log_weight_terms).sum(0)
        if not detach:  # -log F_n's |eps_n|^2 / 2, summed outside the graph
            log_rho = _LogProbWithScore.apply(x, log_rho, score)
            log_weights = log_weights + 0.5 * noise.energy(rows)
        return Rollout(x.detach(), log_weights + log_rho, components)

    def loss_and_gradients(
        self, batch_size: int, generator: torch.Generator | None, threads: int = 1
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss on a fresh batch and statistics of its log weights (floats); the
        loss's gradients are stored in the parameters' `.grad` (replacing what was there).

        With `threads` > 1, row blocks of the batch are integrated and differentiated in
        parallel threads and their gradients added in a fixed order: the result is
        deterministic and differs from one thread's only by floating-point rounding.
        """
        parts = self._rollout_parts(batch_size, generator, self.loss_kind == "logvar", threads)
        log_w = torch.cat([part.log_weights.detach() for part in parts]).requires_grad_()
        loss = -log_w.mean() if self.loss_kind == "rkl" else log_w.var()
        (loss_by_log_w,) = torch.autograd.grad(loss, log_w)
        params = [param for param in self.parameters() if param.requires_grad]
        upstream = loss_by_log_w.split([len(part.log_weights) for part in parts])

        def gradients(block: tuple[Rollout, Tensor]) -> tuple[Tensor | None, ...]:
            part, grad = block
            return torch.autograd.grad(part.log_weights, params, grad, allow_unused=True)

        block_grads = in_parallel(gradients, list(zip(parts, upstream, strict=True)))
        for param, grads in zip(params, zip(*block_grads, strict=True), strict=True):
            present = [grad for grad in grads if grad is not None]
            param.grad = functools.reduce(torch.add, present) if present else None
        log_w = log_w.detach()
        stats = {ELBO: elbo(log_w), LOG_Z: log_z_estimate(log_w), ESS: ess(log_w)}
        return loss.detach(), stats

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, threads: int = 1
    ) -> tuple[Tensor, Tensor]:
        """`n` samples x_N [n, d] and their log importance weights [n]."""
        rollout = self.rollout(n, generator, threads=threads)
        return rollout.x, rollout.log_weights


MIN_ROWS_PER_THREAD = 128  # below this a thread's share of the batch costs more than it saves


def row_blocks(n: int, threads: int) -> list[slice]:
    """Contiguous row ranges that split `n` rows among at most `threads` threads, each with at
    least MIN_ROWS_PER_THREAD rows (one block for a small batch)."""
    count = max(1, min(threads, n // MIN_ROWS_PER_THREAD))
    return [slice(i * n // count, (i + 1) * n // count) for i in range(count)]


@functools.cache
def _thread_pool(size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(size, thread_name_prefix="gmp-rows")


def in_parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """[fn(item) for item in items], one thread per item (inline for a single item)."""
    if len(items) == 1:
        return [fn(items[0])]
    return list(_thread_pool(len(items)).map(fn, items))


class RolloutNoise:
    """The random draws of one rollout of `n` trajectories, made in one fixed order whoever asks
    first: the prior's slots and x_0's noise, then eps_n [n, d] for n = 0..N-1. Threads that
    integrate different rows read the same draws, so a batch's trajectories do not depend on how
    it is split. A step's draw is kept until each of `readers` has read it.

    A reader of step i also draws up to DRAW_AHEAD steps beyond it, outside the lock that reads
    take, so a thread reading a step already drawn never waits while another draws. With
    `energy`, whoever draws eps_n also adds |eps_n|^2 to each row's running sum (`energy`): once
    for the whole batch instead of once per reader.
    """

    DRAW_AHEAD = 2

    def __init__(
        self,
        prior: GaussianMixturePrior,
        n: int,
        n_steps: int,
        generator: torch.Generator | None,
        readers: int,
        energy: bool = False,
    ) -> None:
        self.components, self.initial = prior.draw(n, generator)
        self._energy = self.initial.new_zeros(n) if energy else None
        self._generator = generator
        self._readers = readers
        self._n_steps = n_steps
        self._drawn: dict[int, Tensor] = {}
        self._n_drawn = 0
        self._drawing = False  # one thread at a time draws, outside the lock
        self._reads = [0] * n_steps
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def step(self, i: int, rows: slice) -> Tensor:
        """Rows `rows` of eps_i, drawing eps_0..eps_i (and a few beyond) first where not yet
        drawn."""
        while True:
            self._draw_until(min(i + self.DRAW_AHEAD, self._n_steps - 1))
            with self._lock:
                while i >= self._n_drawn and self._drawing:
                    self._changed.wait()
                if i < self._n_drawn:
                    eps = self._drawn[i]
                    self._reads[i] += 1
                    if self._reads[i] == self._readers:
                        del self._drawn[i]
                    return eps[rows]

    def energy(self, rows: slice) -> Tensor:
        """sum_n |eps_n|^2 of rows `rows` [len], once this reader has read every step."""
        assert self._energy is not None, "drawn without `energy`"
        return self._energy[rows]

    def _draw_until(self, last: int) -> None:
        """Draw eps up to step `last` unless drawn or another thread is drawing."""
        with self._lock:
            if self._drawing or self._n_drawn > last:
                return
            self._drawing = True
            index = self._n_drawn
        compiled = native.active()
        draw = draw_noise if compiled is None else compiled.draw_noise
        try:
            while index <= last:
                eps = draw(self.initial, self._generator, self._energy)
                with self._lock:
                    self._drawn[index] = eps
                    self._n_drawn = index = index + 1
                    self._changed.notify_all()
        finally:
            with self._lock:
                self._drawing = False
                self._changed.notify_all()
