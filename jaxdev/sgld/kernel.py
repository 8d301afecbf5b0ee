"""One SGLD step as a pure closure, in the blackjax manner: state, info, init and the kernel.

The update rule (see :mod:`jaxdev.sgld`) is written here once; :func:`jaxdev.sgld.run_chains`
scans this kernel, so what a test checks of one step is what every chain does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxdev.errors import ConfigError
from jaxdev.sgld import checks
from jaxdev.sgld import precondition

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Scalar = Union[float, jax.Array]


class SGLDState(NamedTuple):
  """State of one SGLD chain.

  Attributes:
    params: current parameters w_t (same pytree as the center).
    center: the localization center w* (and the bounding-box center).
    precond: RMSProp running mean V of squared gradients (a pytree like params), or None.
    step: int32 number of updates taken.
  """
  params: PyTree
  center: PyTree
  precond: Optional[PyTree]
  step: jax.Array


class SGLDInfo(NamedTuple):
  """Per-step diagnostics, all scalars, all computed at the **pre-step** weights.

  Attributes:
    loss: minibatch loss L_m(w_t) (the quantity the LLC averages).
    distance: ‖w_t − w*‖ over all parameters.
    grad_norm: ‖∇L_m(w_t)‖ of the raw loss (not multiplied by nβ).
    noise_norm: norm of the noise actually added (after mask and preconditioner).
    drift_norm: norm of the deterministic displacement (ε/2)·G·∇U (after the mask).
  """
  loss: jax.Array
  distance: jax.Array
  grad_norm: jax.Array
  noise_norm: jax.Array
  drift_norm: jax.Array


def default_nbeta(batch_size: int) -> float:
  """Default nβ = m / ln m for SGLD batch size m (devinterp's and the paper's convention).

  Args:
    batch_size: SGLD minibatch size m ≥ 2.

  Returns:
    m / ln m as a Python float (e.g. 1000 → 144.76, 100 → 21.71).

  Raises:
    ConfigError: m < 2 (ln m would be ≤ 0).
  """
  if batch_size < 2:
    raise ConfigError(f"default_nbeta needs batch_size >= 2, got {batch_size}")
  return batch_size / math.log(batch_size)


def sq_norm(tree) -> jax.Array:
  """Σ x² over every leaf, in float32."""
  leaves = jax.tree.leaves(tree)
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)


def apply_mask(mask, tree):
  """Zeroes the coordinates of ``tree`` where ``mask`` (None, or a tree prefix of bools) is False.

  The mask is expanded over ``tree`` here, the one place that does it.
  """
  if mask is None:
    return tree
  return jax.tree.map(
      lambda m, sub: jax.tree.map(lambda x: jnp.where(jnp.asarray(m, bool), x, jnp.zeros_like(x)),
                                  sub), mask, tree)


def force(grad, params, center, *, nbeta, gamma, weight_decay):
  """∇U = nβ∇L_m + γ(w − w*) + λ_wd·w, the gradient of the potential (unmasked)."""
  return jax.tree.map(lambda g, w, c: nbeta * g + gamma * (w - c) + weight_decay * w,
                      grad, params, center)


def potential(loss, params, center, *, nbeta, gamma, weight_decay):
  """U = nβL_m + (γ/2)‖w − w*‖² + (λ_wd/2)‖w‖²."""
  return (nbeta * loss + 0.5 * gamma * sq_norm(jax.tree.map(jnp.subtract, params, center))
          + 0.5 * weight_decay * sq_norm(params))


def init(params: PyTree, *, preconditioner=None) -> SGLDState:
  """Starts a chain at ``params``, which is also the localization center w*.

  Args:
    params: the point w* (any pytree of float arrays).
    preconditioner: None (plain SGLD), ``"rmsprop"`` or an :class:`RMSProp`.

  Returns:
    SGLDState with params = center = ``params``, V = V₀ (RMSProp; 0 unless its ``initial``
    says) or None, step 0.
  """
  precond = precondition.build(preconditioner).init(params)
  return SGLDState(params, params, precond, jnp.zeros((), jnp.int32))


def build_kernel(loss_fn: LossFn, *, step_size: Scalar, nbeta: Scalar, gamma: Scalar,
                 noise_level: Scalar = 1.0, weight_decay: Scalar = 0.0, mask: PyTree = None,
                 preconditioner=None, bounding_box: Optional[Scalar] = None):
  """Builds one SGLD step, in the blackjax manner (a pure closure).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    step_size: ε > 0.
    nbeta: nβ > 0, the product of sample size and inverse temperature.
    gamma: localization strength γ ≥ 0 (pull towards the center w*).
    noise_level: multiplies the noise standard deviation (1 samples the posterior).
    weight_decay: λ_wd of a Gaussian prior centred at zero (adds λ_wd·w to the drift).
    mask: None, or a pytree (a prefix of params is fine) of bools / bool arrays broadcastable to
      the parameters: False coordinates never move (weight-restricted LLC).
      :func:`jaxdev.sgld.resolve_mask` makes one from parameter-path globs.
    preconditioner: None, ``"rmsprop"`` or an :class:`RMSProp`; the state must come from
      :func:`init` with the same choice.
    bounding_box: None, or b > 0: after each step w is clipped to [w* − b, w* + b].

  Hyperparameters may be traced arrays (the calibration sweep vmaps over them); concrete values
  are checked here.

  Returns:
    ``kernel(key, state, batch, loss_and_grad=None) -> (state, info)``: one value-and-gradient
    evaluation of ``loss_fn`` at ``state.params`` on ``batch`` (or the given ``(loss, grad)`` of
    that point, when the caller already has them), then the update. ``key`` drives the noise
    only. ``info`` is an :class:`SGLDInfo` of the pre-step point.

  Raises:
    ConfigError: a concrete hyperparameter out of range or not finite.

  Example::

    state = sgld.init(params)
    kernel = jax.jit(sgld.build_kernel(loss_fn, step_size=1e-4, nbeta=100.0, gamma=10.0))
    state, info = kernel(jax.random.key(0), state, batch)
  """
  checks.check_hyperparameters(step_size=step_size, nbeta=nbeta, gamma=gamma,
                               noise_level=noise_level, weight_decay=weight_decay,
                               bounding_box=bounding_box)
  rescale = precondition.build(preconditioner).update
  value_and_grad = jax.value_and_grad(loss_fn)

  def kernel(key, state: SGLDState, batch, loss_and_grad=None):
    params, center = state.params, state.center
    loss, grad = value_and_grad(params, batch) if loss_and_grad is None else loss_and_grad
    drive = force(grad, params, center, nbeta=nbeta, gamma=gamma, weight_decay=weight_decay)
    flat, unravel = ravel_pytree(params)
    noise = unravel(jax.random.normal(key, flat.shape, flat.dtype))
    scale = jnp.sqrt(step_size) * noise_level
    inverse, precond = rescale(grad, state.precond)
    if inverse is None:  # G ≡ 1: multiplying by 1.0 is exact, the numbers are plain SGLD's
      inverse = jax.tree.map(lambda _: 1.0, drive)
    drift = jax.tree.map(lambda f, q: 0.5 * step_size * q * f, drive, inverse)
    noise = jax.tree.map(lambda z, q: scale * jnp.sqrt(q) * z, noise, inverse)
    drift, noise = apply_mask(mask, drift), apply_mask(mask, noise)
    new_params = jax.tree.map(lambda w, d, z: (w - d + z).astype(w.dtype), params, drift, noise)
    if bounding_box is not None:
      new_params = jax.tree.map(
          lambda w, c: jnp.clip(w, c - bounding_box, c + bounding_box).astype(w.dtype),
          new_params, center)
    diff_sq = sq_norm(jax.tree.map(jnp.subtract, params, center))
    info = SGLDInfo(loss=loss, distance=jnp.sqrt(diff_sq), grad_norm=jnp.sqrt(sq_norm(grad)),
                    noise_norm=jnp.sqrt(sq_norm(noise)), drift_norm=jnp.sqrt(sq_norm(drift)))
    return SGLDState(new_params, center, precond, state.step + 1), info

  return kernel
