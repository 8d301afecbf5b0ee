"""Curvature of the loss at a parameter point from Hessian-vector products (paper appendix D.1.3).

The Hessian is never formed. ``hvp`` is forward-over-reverse differentiation
(``jax.jvp`` of ``jax.grad``) on a fixed batch; the trace is Hutchinson's estimator
tr H = E[vᵀ H v] with Rademacher probes v ∈ {±1}^d, and the top eigenvalues come from ARPACK's
implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) driving a jitted Hessian-vector
product through a ``LinearOperator``.

Conventions: ``loss_fn(params, batch)`` is the mean loss over the batch (the training loss), so H
is the Hessian of the mean; the standard error of the trace is the std over probes (ddof = 1)
divided by √(num_probes); eigenvalues are the largest algebraic ones (``which="LA"``) in
descending order. A Rademacher probe gives vᵀHv = tr H + Σ_{i≠j} v_i v_j H_ij, so the
estimator is exact for a diagonal Hessian and its variance is 2 Σ_{i≠j} H_ij².
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree


class CurvatureResult(NamedTuple):
  """Hutchinson trace (mean, standard error, per-probe values) and top eigenvalues."""

  trace: float
  trace_sem: float
  trace_samples: np.ndarray
  eigenvalues: np.ndarray


def hvp(loss_fn: Callable, params, batch, vector) -> jax.Array:
  """H·v for a flat vector ``vector`` [d] (the order of ``ravel_pytree(params)``): shape [d].

  Pure; jit it with ``loss_fn`` static (:data:`jitted_hvp` does), so that parameters and batch
  are arguments, not constants baked into the program.
  """
  flat, unravel = ravel_pytree(params)

  def flat_loss(w):
    return loss_fn(unravel(w), batch)

  return jax.jvp(jax.grad(flat_loss), (flat,), (vector.astype(flat.dtype),))[1]


jitted_hvp = jax.jit(hvp, static_argnums=0)


def hutchinson_samples(loss_fn: Callable, params, batch, key, num_probes: int) -> jax.Array:
  """vᵀHv for ``num_probes`` Rademacher probes v drawn from ``key``: shape [num_probes].

  Pure and jittable (probes run one after another under ``lax.map``, so memory is that of one
  Hessian-vector product); vmaps over stacked ``params``.
  """
  flat, _ = ravel_pytree(params)
  keys = jax.random.split(key, num_probes)

  def one(k):
    v = jax.random.rademacher(k, flat.shape, dtype=flat.dtype)
    return jnp.vdot(v, hvp(loss_fn, params, batch, v))

  return jax.lax.map(one, keys)


jitted_hutchinson_samples = jax.jit(hutchinson_samples, static_argnums=(0, 4))


def summarize_trace(samples) -> tuple[float, float]:
  """(mean, standard error = std(ddof=1)/√n) of Hutchinson samples."""
  samples = np.asarray(samples, np.float64)
  sem = samples.std(ddof=1) / np.sqrt(samples.size) if samples.size > 1 else float("nan")
  return float(samples.mean()), float(sem)


def top_eigenvalues(loss_fn: Callable, params, batch, k: int = 3, *, tol: float = 1e-6,
                    seed: int = 0, max_iterations: int | None = None) -> np.ndarray:
  """The ``k`` largest (algebraic) Hessian eigenvalues by Lanczos, in descending order.

  Runs ``scipy.sparse.linalg.eigsh`` on a ``LinearOperator`` whose matvec is the jitted
  Hessian-vector product (float64 on the host, float32 on the device). The starting vector is
  drawn from ``seed``, so results are reproducible. Host-driven: not jittable.

  Args:
    loss_fn: (params, batch) -> scalar mean loss.
    params: the parameter point.
    batch: the fixed batch the Hessian is taken on.
    k: number of eigenvalues (must be below the parameter count).
    tol: ARPACK's relative accuracy.
    seed: seed of the starting vector.
    max_iterations: ARPACK's ``maxiter`` (default 10·d as scipy).
  """
  flat, _ = ravel_pytree(params)
  size = int(flat.size)
  if not 0 < k < size:
    raise ValueError(f"k must be in [1, {size - 1}] for {size} parameters, got {k}")

  def matvec(v):
    vector = jnp.asarray(np.ravel(v), flat.dtype)
    return np.asarray(jitted_hvp(loss_fn, params, batch, vector), np.float64)

  operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, dtype=np.float64)
  v0 = np.random.default_rng(seed).standard_normal(size)
  values = scipy.sparse.linalg.eigsh(operator, k=k, which="LA", tol=tol, v0=v0,
                                     maxiter=max_iterations, return_eigenvectors=False)
  return np.sort(values)[::-1]


def curvature(loss_fn: Callable, params, batch, key, *, num_probes: int = 100,
              num_eigenvalues: int = 3, tol: float = 1e-6) -> CurvatureResult:
  """Hutchinson trace (with standard error) and the top ``num_eigenvalues`` eigenvalues."""
  samples = np.asarray(jitted_hutchinson_samples(loss_fn, params, batch, key, num_probes))
  trace, sem = summarize_trace(samples)
  eigenvalues = top_eigenvalues(loss_fn, params, batch, num_eigenvalues, tol=tol)
  return CurvatureResult(trace, sem, samples, eigenvalues)


def curvature_record(result: CurvatureResult) -> dict:
  """Record columns, named as the authors' ``hessian.csv``: hessian_trace, hessian_trace_sem,
  eig_1, eig_2, ... (descending), plus the per-probe samples."""
  record = {"hessian_trace": np.float64(result.trace),
            "hessian_trace_sem": np.float64(result.trace_sem),
            "hessian_trace_samples": np.asarray(result.trace_samples, np.float64)}
  for i, value in enumerate(result.eigenvalues):
    record[f"eig_{i + 1}"] = np.float64(value)
  return record


def benchmark_curvature(loss_fn: Callable, params: Any, batch, *, num_probes: int = 100,
                        num_eigenvalues: int = 3, seed: int = 0) -> dict:
  """Times one :func:`curvature` call after a compiling warm-up; returns a JSON-ready dict.

  The warm-up runs one probe and one Hessian-vector product so that compilation is excluded.
  """
  flat, _ = ravel_pytree(params)
  jax.block_until_ready(jitted_hvp(loss_fn, params, batch, jnp.ones_like(flat)))
  jax.block_until_ready(jitted_hutchinson_samples(loss_fn, params, batch,
                                                  jax.random.PRNGKey(seed), num_probes))
  start = time.perf_counter()
  result = curvature(loss_fn, params, batch, jax.random.PRNGKey(seed), num_probes=num_probes,
                     num_eigenvalues=num_eigenvalues)
  seconds = time.perf_counter() - start
  num_examples = int(jax.tree.leaves(batch)[0].shape[0])
  return {"benchmark": "hessian", "num_params": int(flat.size), "num_examples": num_examples,
          "num_probes": num_probes, "num_eigenvalues": num_eigenvalues,
          "seconds_per_checkpoint": seconds, "hessian_trace": result.trace,
          "eigenvalues": [float(v) for v in result.eigenvalues]}
