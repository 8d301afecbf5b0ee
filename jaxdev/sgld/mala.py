"""MALA acceptance probability of an SGLD move: how far one step is from an exact sampler."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdev.sgld import kernel as kernel_lib
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.kernel import Scalar


def mala_acceptance_probability(prev_params: PyTree, prev_force: PyTree, prev_potential,
                                params: PyTree, force: PyTree, potential,
                                step_size: Scalar) -> jax.Array:
  """Metropolis-adjusted Langevin acceptance probability of the move prev_params → params.

  devinterp's formula: with the Langevin proposal q(x'|x) = N(x − (ε/2)∇U(x), ε·I),

    a = min(1, exp( U(prev) − U(cur) + log q(prev|cur) − log q(cur|prev) )).

  It measures how far the discretised dynamics is from leaving the target exp(−U) invariant
  (1 for an exact sampler). The preconditioner and ``noise_level`` are not part of the formula.

  Args:
    prev_params, params: the points before and after the move (same pytree).
    prev_force, force: ∇U at those points.
    prev_potential, potential: U at those points.
    step_size: ε.

  Returns:
    Scalar in [0, 1] (NaN if a potential is not finite).
  """
  def sq_dist(a, b, grad_b):
    moved = jax.tree.map(lambda x, y, g: x - y + 0.5 * step_size * g, a, b, grad_b)
    return kernel_lib.sq_norm(moved)

  log_q_backward = -sq_dist(prev_params, params, force) / (2.0 * step_size)
  log_q_forward = -sq_dist(params, prev_params, prev_force) / (2.0 * step_size)
  log_ratio = prev_potential - potential + log_q_backward - log_q_forward
  return jnp.exp(jnp.minimum(log_ratio, 0.0))


def mala_point(params, loss, grad, center, *, nbeta, gamma, weight_decay, mask):
  """(w, ∇U(w), U(w)) in float32, ∇U masked like the drift."""
  hyper = dict(nbeta=nbeta, gamma=gamma, weight_decay=weight_decay)
  drive = kernel_lib.apply_mask(mask, kernel_lib.force(grad, params, center, **hyper))
  point = (params, drive, kernel_lib.potential(loss, params, center, **hyper))
  return jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.float32), point)
