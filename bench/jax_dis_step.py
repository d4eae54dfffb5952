"""The authors' DIS training step in JAX (learned Gaussian prior), for a side-by-side speed check.

JAX is not a dependency of gmp; install it into the venv to run this file:

    pip install jax==0.10.2 jaxlib==0.10.2      # CPU wheels, about 600 MB

A faithful re-implementation of the step that PAPER.md §7 timed, written after the structure of
the authors' public benchmark code (PAPER.md §1): the batch is a `jax.vmap` over per-sample
trajectories, each a `jax.lax.scan` over the N Euler–Maruyama steps with its own PRNG key split
every step; the prior score (and the target score fed to the network) come from `jax.grad` of
the per-sample log densities, evaluated at both ends of every step (the forward and the backward
kernel); the PIS-grad network (Fourier time features, GELU MLPs, flax's tanh-approximated GELU
and LeCun-normal initialisation) is called with the step index as its time; dt_n =
softplus(theta) * cosine(n), eta = dt / softplus(friction); loss = mean of the negative ELBO,
differentiated with `jax.value_and_grad`; NaN gradients zeroed, global-norm clipping at 1, Adam
with one learning rate for the network and one for prior, dt and friction. The whole training
iteration (rollout, gradient, update) is one `jax.jit`-compiled function.

    python -m bench.jax_dis_step --target funnel --iters 5 --warmup 2   # one timing row (JSON)
    python -m bench.jax_dis_step --target funnel --no-target-score --authors --curve 1000 \
        > jax_curve.json        # the training ELBO every 100 iterations, the authors' defaults
                                # (--checkpoint FILE.npz: a stopped run continues from FILE)
    python -m bench.jax_dis_step --target credit --prior-scale 10 --no-target-score --authors \
        --curve 1000 > jax_credit_curve.json   # credit with the N(0, 10^2) prior on the weights

`bench/dis_vs_jax.py` runs this beside our torch step, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.dis_step import SETTINGS, limit_threads

ROOT = Path(__file__).resolve().parents[1]
COSINE_FLOOR, COSINE_OFFSET = 0.01, 0.008  # m and c of the cosine dt schedule (PAPER.md §1)
LR_NETWORK, LR_OTHER = 5e-4, 1e-2
INNER_CLIP, OUTER_CLIP = 1e2, 1e4
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8

Params = dict[str, Any]


def target_arrays(name: str, kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The constants of target `name` as built by our registry (so both sides see the same data)."""
    import targets

    target = targets.make(name, **kwargs)
    arrays = {k: v.numpy() for k, v in target._buffers.items()}
    if getattr(target, "prior_scale", None) is not None:
        arrays["prior_scale"] = np.asarray(target.prior_scale)
    return {**arrays, "dim": np.asarray(target.dim)}


def make_target_log_prob(name: str, arrays: dict[str, np.ndarray]) -> Callable:
    """log rho(x) of one sample x [d]: funnel, credit (with its weight prior if any), gmm40."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from jax.scipy.stats import norm

    if name == "funnel":

        def funnel(x):
            v = x[0]
            return norm.logpdf(v, 0.0, 3.0) + norm.logpdf(x[1:], 0.0, jnp.exp(0.5 * v)).sum()

        return funnel
    if name == "credit":
        signed_design = jnp.asarray(arrays["signed_design"], dtype=jnp.float32)
        prior_scale = float(arrays.get("prior_scale", math.inf))

        def credit(x):
            log_likelihood = jax.nn.log_sigmoid(signed_design @ x).sum()
            if math.isinf(prior_scale):
                return log_likelihood
            return log_likelihood + norm.logpdf(x, 0.0, prior_scale).sum()

        return credit
    if name == "gmm40":
        means = jnp.asarray(arrays["means"], dtype=jnp.float32)
        n_modes, dim = means.shape

        def gmm(x):
            comp = -0.5 * jnp.square(x - means).sum(-1) - 0.5 * dim * math.log(2 * math.pi)
            return logsumexp(comp) - math.log(n_modes)

        return gmm
    raise ValueError(f"no JAX version of target {name!r}")


def _dense(key, n_in: int, n_out: int) -> tuple:
    """flax.linen.Dense's default init: truncated-normal LeCun weights, zero bias."""
    import jax
    import jax.numpy as jnp

    std = math.sqrt(1.0 / n_in) / 0.87962566103423978
    weight = std * jax.random.truncated_normal(key, -2.0, 2.0, (n_in, n_out), jnp.float32)
    return weight, jnp.zeros(n_out, jnp.float32)


def _constant(n_in: int, n_out: int, weight: float, bias: float) -> tuple:
    import jax.numpy as jnp

    return jnp.full((n_in, n_out), weight, jnp.float32), jnp.full(n_out, bias, jnp.float32)


def init_params(
    key, dim: int, hidden: int, n_layers: int, init_dt: float, per_dim_friction: bool = False
) -> Params:
    """Network (PIS-grad), learned-Gaussian prior (mean 0, std 1), dt and friction (1, one per
    dimension if `per_dim_friction`)."""
    import jax
    import jax.numpy as jnp

    keys = iter(jax.random.split(key, 4 + 2 * n_layers))
    inv_softplus = lambda y: math.log(math.expm1(y))  # noqa: E731
    network = {
        "phase": jnp.zeros(hidden, jnp.float32),
        "time_state": [_dense(next(keys), 2 * hidden, hidden), _dense(next(keys), hidden, hidden)],
        "state": [_dense(next(keys), dim + hidden, hidden)]
        + [_dense(next(keys), hidden, hidden) for _ in range(n_layers - 1)]
        + [_constant(hidden, dim, 1e-8, 0.0)],
        "time_grad": [_dense(next(keys), 2 * hidden, hidden)]
        + [_dense(next(keys), hidden, hidden) for _ in range(n_layers)]
        + [_constant(hidden, dim, 1e-8, 1.0)],
    }
    return {
        "network": network,
        "prior_mean": jnp.zeros(dim, jnp.float32),
        "prior_std": jnp.full(dim, inv_softplus(1.0), jnp.float32),
        "dt": jnp.full(1, inv_softplus(init_dt), jnp.float32),
        "friction": jnp.full(dim if per_dim_friction else 1, inv_softplus(1.0), jnp.float32),
    }


def pis_grad_net(net: Params, x, step, target_score, use_target_score: bool):
    """The PIS-grad control of one state x [d] at step index `step` (a float scalar)."""
    import jax
    import jax.numpy as jnp

    def mlp(layers, h, gelu_first: bool = False):
        for i, (weight, bias) in enumerate(layers):
            if i or gelu_first:
                h = jax.nn.gelu(h)
            h = h @ weight + bias
        return h

    hidden = net["phase"].shape[0]
    frequencies = jnp.linspace(0.1, 100.0, hidden)
    angle = frequencies * step + net["phase"]
    features = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])
    time_state = mlp(net["time_state"], features)
    state_layers = net["state"]
    h = jax.nn.gelu(jnp.concatenate([x, time_state]) @ state_layers[0][0] + state_layers[0][1])
    out = jnp.clip(mlp(state_layers[1:], h), -OUTER_CLIP, OUTER_CLIP)
    if use_target_score:
        scale = mlp(net["time_grad"][:-1], features)
        scale = jax.nn.gelu(scale) @ net["time_grad"][-1][0] + net["time_grad"][-1][1]
        out = out + scale * jnp.clip(target_score, -INNER_CLIP, INNER_CLIP)
    return out


def make_train_step(
    target_log_prob: Callable,
    dim: int,
    n_steps: int,
    batch: int,
    use_ts: bool,
    authors: bool = False,
):
    """The jitted training iteration (params, adam state, key) -> (same, loss).

    `authors` switches to the authors' code defaults (PAPER.md §4) where this step differs from
    them for speed measurements: Adam 5e-4 for prior, dt and friction too (not 1e-2), and each
    gradient element clipped to [-1, 1] (not the global norm).
    """
    lr_other = LR_NETWORK if authors else LR_OTHER
    import jax
    import jax.numpy as jnp

    def prior_log_prob(x, params):
        std = jax.nn.softplus(params["prior_std"])
        z = (x - params["prior_mean"]) / std
        return -0.5 * jnp.sum(z**2 + 2 * jnp.log(std) + math.log(2 * math.pi))

    def dt_schedule(step):
        t = (n_steps - step) / n_steps
        angle = 0.5 * jnp.pi * (1 + COSINE_OFFSET - t) / (1 + COSINE_OFFSET)
        return (1 - COSINE_FLOOR) * jnp.cos(angle) ** 2 + COSINE_FLOOR

    def drift_fn(x, params):
        target_score = jax.grad(target_log_prob)(x) if use_ts else None
        return jax.grad(prior_log_prob)(x, params), target_score

    def log_prob_kernel(x, mean, scale):
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, scale))

    def per_sample_neg_elbo(key, params):
        key, key_gen = jax.random.split(key)
        init_x = params["prior_mean"] + jax.nn.softplus(params["prior_std"]) * jax.random.normal(
            key, (dim,)
        )

        def integrate_em(state, step):
            x, log_w, key_gen = state
            step = step.astype(jnp.float32)
            eta = jax.nn.softplus(params["dt"][0]) * dt_schedule(step)
            eta = eta / jax.nn.softplus(params["friction"])
            scale = jnp.sqrt(2 * eta)
            drift, aux = drift_fn(x, params)
            control = pis_grad_net(
                params["network"], x, step, jax.lax.stop_gradient(aux) if use_ts else None, use_ts
            )
            fwd_mean = x + eta * (drift + control)
            key, key_gen = jax.random.split(key_gen)
            x_new = fwd_mean + scale * jax.random.normal(key, (dim,))
            drift_new, _ = drift_fn(x_new, params)
            bwd_mean = x_new + eta * drift_new  # DIS: no backward control
            log_w += log_prob_kernel(x, bwd_mean, scale) - log_prob_kernel(x_new, fwd_mean, scale)
            key, key_gen = jax.random.split(key_gen)
            return (x_new, log_w, key_gen), None

        (final_x, log_ratio, _), _ = jax.lax.scan(
            integrate_em, (init_x, jnp.zeros(()), key_gen), jnp.arange(n_steps)
        )
        return prior_log_prob(init_x, params) - target_log_prob(final_x) - log_ratio

    def loss_fn(params, key):
        keys = jax.random.split(key, batch)
        return jnp.mean(jax.vmap(per_sample_neg_elbo, in_axes=(0, None))(keys, params))

    def learning_rates(params: Params) -> Params:
        lrs = {k: jax.tree.map(lambda _: lr_other, v) for k, v in params.items()}
        lrs["network"] = jax.tree.map(lambda _: LR_NETWORK, params["network"])
        return lrs

    @jax.jit
    def train_step(params, adam, key):
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, sub)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isnan(g), 0.0, g), grads)
        if authors:
            grads = jax.tree.map(lambda g: jnp.clip(g, -1.0, 1.0), grads)
        else:
            norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
            grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, 1.0 / (norm + 1e-6)), grads)
        count = adam["count"] + 1
        mu = jax.tree.map(lambda m, g: ADAM_B1 * m + (1 - ADAM_B1) * g, adam["mu"], grads)
        nu = jax.tree.map(lambda v, g: ADAM_B2 * v + (1 - ADAM_B2) * g**2, adam["nu"], grads)
        correction1, correction2 = 1 - ADAM_B1**count, 1 - ADAM_B2**count

        def update(p, m, v, lr):
            return p - lr * (m / correction1) / (jnp.sqrt(v / correction2) + ADAM_EPS)

        params = jax.tree.map(update, params, mu, nu, learning_rates(params))
        return params, {"count": count, "mu": mu, "nu": nu}, key, loss

    return train_step


def build(spec: dict[str, Any]) -> tuple:
    """The jitted step and its starting (params, adam state, key) for `spec`.

    `spec["threads"]` bounds the CPUs (affinity) and, at 1, XLA's own thread pools;
    `spec["cache_dir"]`, if set, is JAX's persistent compilation cache (later processes of the
    same configuration load the compiled step instead of compiling it again); `spec["authors"]`
    (default false) takes the authors' code defaults (see `make_train_step`) and one friction
    per dimension.
    """
    limit_threads(spec["threads"])
    if spec["threads"] == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    import jax
    import jax.numpy as jnp

    if spec.get("cache_dir"):
        jax.config.update("jax_compilation_cache_dir", spec["cache_dir"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    authors = spec.get("authors", False)
    arrays = target_arrays(spec["target"], spec["target_kwargs"])
    dim = int(arrays["dim"])
    seed = spec.get("seed", 0)  # seed 0: initial parameters from key 0, training draws from key 1
    params = init_params(
        jax.random.PRNGKey(2 * seed), dim, spec["hidden"], 2, spec["init_dt"], authors
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    adam = {"count": jnp.zeros((), jnp.int32), "mu": zeros, "nu": zeros}
    step = make_train_step(
        make_target_log_prob(spec["target"], arrays),
        dim,
        spec["n_steps"],
        spec["batch"],
        spec["target_score"],
        authors,
    )
    return step, (params, adam, jax.random.PRNGKey(2 * seed + 1)), dim


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Compile and time the JAX step for `spec` (keys as in bench/dis_step.py); a result row."""
    import jax

    step, (params, adam, key), dim = build(spec)
    start = time.perf_counter()
    params, adam, key, loss = step(params, adam, key)
    loss.block_until_ready()
    compile_s = time.perf_counter() - start
    for _ in range(spec["warmup"]):
        params, adam, key, loss = step(params, adam, key)
    loss.block_until_ready()
    seconds, cpu_seconds = [], []
    for _ in range(spec["iters"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        params, adam, key, loss = step(params, adam, key)
        loss.block_until_ready()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    if not math.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite JAX loss {float(loss)}")
    return {
        **spec,
        "dim": dim,
        "s_per_iter": statistics.median(seconds),
        "s_min": min(seconds),
        "cpu_s_per_iter": statistics.median(cpu_seconds),
        "compile_s": compile_s,
        "loss": float(loss),
        "jax_version": jax.__version__,
    }


def learning_curve(
    spec: dict[str, Any], iterations: int, every: int, checkpoint: Path | None = None
) -> list[dict[str, float]]:
    """Train `iterations` iterations; the training ELBO (minus the batch's loss) every `every`.

    With `checkpoint`, the state (parameters, Adam moments, PRNG key, rows so far) is saved there
    every `every` iterations and a run that finds it continues from it, with the same draws as
    an uninterrupted run.
    """
    import jax

    step, state, _ = build(spec)
    leaves, treedef = jax.tree.flatten(state)
    rows: list[dict[str, float]] = []
    if checkpoint is not None and checkpoint.exists():
        saved = np.load(checkpoint)
        leaves = [saved[f"leaf{i}"] for i in range(len(leaves))]
        state = jax.tree.unflatten(treedef, leaves)
        rows = json.loads(str(saved["rows"]))
    params, adam, key = state
    for iteration in range(len(rows) * every + 1, iterations + 1):
        params, adam, key, loss = step(params, adam, key)
        if iteration % every == 0:
            rows.append({"iteration": iteration, "train_elbo": -float(loss)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if checkpoint is not None:
                leaves = jax.tree.leaves((params, adam, key))
                partial = checkpoint.with_suffix(".partial.npz")
                arrays = {f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
                np.savez(partial, rows=json.dumps(rows), **arrays)
                partial.replace(checkpoint)
    return rows


def main() -> None:
    """One JSON row on stdout: the JAX step for one target, timed after compilation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="funnel", choices=["funnel", "credit", "gmm40"])
    parser.add_argument("--batch", type=int, help="default: the paper's (bench/dis_step.py)")
    parser.add_argument("--n-steps", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-target-score", action="store_true")
    parser.add_argument("--authors", action="store_true", help="the authors' code defaults")
    parser.add_argument(
        "--curve",
        type=int,
        metavar="ITERS",
        help="train ITERS iterations and "
        "write the training ELBO every --every iterations (JSON) instead",
    )
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="with --curve: save the state here every --every iterations and resume from it",
    )
    parser.add_argument(
        "--prior-scale",
        type=float,
        help="credit: the N(0, s^2) prior on the weights (default none)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPUs to use")
    parser.add_argument("--seed", type=int, default=0, help="initial parameters and draws")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
    else:
        kwargs, batch, init_dt = SETTINGS[args.target]
        spec = {
            "target": args.target,
            "target_kwargs": kwargs
            | ({"prior_scale": args.prior_scale} if args.prior_scale else {}),
            "batch": args.batch or batch,
            "init_dt": init_dt,
            "n_steps": args.n_steps,
            "hidden": args.hidden,
            "iters": args.iters,
            "warmup": args.warmup,
            "target_score": not args.no_target_score,
            "threads": args.threads,
            "authors": args.authors,
            "seed": args.seed,
        }
    if args.curve:
        print(json.dumps(learning_curve(spec, args.curve, args.every, args.checkpoint)))
        return
    print(json.dumps(run_one(spec)))


if __name__ == "__main__":
    main()
