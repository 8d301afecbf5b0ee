"""The pure SGLD sampler: state, kernel, chains and L_n(w*) (use it through ``jaxdev.sgld``).

Everything here is pure and jittable; see :mod:`jaxdev.sgld` for the update rule, the
conventions and the accuracy against analytic learning coefficients.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Scalar = Union[float, jax.Array]


class RMSProp(NamedTuple):
  """Settings of the RMSProp preconditioner (defaults of devinterp's ``rmsprop_sgld``).

  Attributes:
    alpha: decay of the running mean of squared minibatch-loss gradients V.
    eps: added to √V; G = 1/(√V + eps) is at most 1/eps.
  """
  alpha: float = 0.99
  eps: float = 0.1


def resolve_preconditioner(preconditioner) -> Optional[RMSProp]:
  """Normalises a preconditioner argument.

  Args:
    preconditioner: None or ``"identity"`` (plain SGLD), ``"rmsprop"`` (default settings) or an
      :class:`RMSProp`.

  Returns:
    None or an :class:`RMSProp` (hashable: usable as a static jit argument).
  """
  if preconditioner is None or preconditioner == "identity":
    return None
  if isinstance(preconditioner, RMSProp):
    return preconditioner
  if preconditioner == "rmsprop":
    return RMSProp()
  raise ValueError(f"preconditioner must be None, 'identity', 'rmsprop' or an RMSProp(...), "
                   f"got {preconditioner!r}")


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


class ChainTrace(NamedTuple):
  """Per-draw records of :func:`run_chains`; every field has shape [num_chains, num_draws].

  Attributes:
    loss: pre-step minibatch loss L_m(w_t).
    distance: ‖w_t − w*‖.
    grad_norm: ‖∇L_m(w_t)‖.
    noise_norm: norm of the injected noise.
    drift_norm: norm of the deterministic displacement.
    mala: MALA acceptance probability of the transition w_{t−1} → w_t (NaN at t = 0), or None
      when not asked for.
  """
  loss: jax.Array
  distance: jax.Array
  grad_norm: jax.Array
  noise_norm: jax.Array
  drift_norm: jax.Array
  mala: Optional[jax.Array] = None


def default_nbeta(batch_size: int) -> float:
  """Default nβ = m / ln m for SGLD batch size m (devinterp's and the paper's convention).

  Args:
    batch_size: SGLD minibatch size m ≥ 2.

  Returns:
    m / ln m as a Python float (e.g. 1000 → 144.76, 100 → 21.71).
  """
  if batch_size < 2:
    raise ValueError(f"default_nbeta needs batch_size >= 2, got {batch_size}")
  return batch_size / math.log(batch_size)


def init(params: PyTree, *, preconditioner=None) -> SGLDState:
  """Starts a chain at ``params``, which is also the localization center w*.

  Args:
    params: the point w* (any pytree of float arrays).
    preconditioner: None (plain SGLD), ``"rmsprop"`` or an :class:`RMSProp`.

  Returns:
    SGLDState with params = center = ``params``, V = zeros (RMSProp) or None, step 0.
  """
  precond = None
  if resolve_preconditioner(preconditioner) is not None:
    precond = jax.tree.map(jnp.zeros_like, params)
  return SGLDState(params, params, precond, jnp.zeros((), jnp.int32))


def _expand_mask(mask, params):
  """A mask given as a tree prefix of params, expanded to params' structure."""
  return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: jnp.asarray(m, bool), sub),
                      mask, params)


def _sq_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)


def _make_update(*, step_size, nbeta, gamma, noise_level, weight_decay, mask, preconditioner,
                 bounding_box):
  """The SGLD transition given the loss and gradient at the current point.

  Returns ``update(key, state, loss, grad) -> (state, info)``.
  """
  rms = resolve_preconditioner(preconditioner)

  def update(key, state: SGLDState, loss, grad):
    params, center = state.params, state.center
    masks = None if mask is None else _expand_mask(mask, params)

    def apply_mask(tree):
      if masks is None:
        return tree
      return jax.tree.map(lambda m, x: jnp.where(m, x, jnp.zeros_like(x)), masks, tree)

    force = jax.tree.map(
        lambda g, w, c: nbeta * g + gamma * (w - c) + weight_decay * w, grad, params, center)
    flat, unravel = ravel_pytree(params)
    noise = unravel(jax.random.normal(key, flat.shape, flat.dtype))
    scale = jnp.sqrt(step_size) * noise_level
    if rms is None:
      precond = state.precond
      drift = jax.tree.map(lambda f: 0.5 * step_size * f, force)
      noise = jax.tree.map(lambda z: scale * z, noise)
    else:
      precond = jax.tree.map(
          lambda v, g: (rms.alpha * v + (1.0 - rms.alpha) * jnp.square(g)).astype(v.dtype),
          state.precond, grad)
      inv = jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v) + rms.eps), precond)
      drift = jax.tree.map(lambda f, q: 0.5 * step_size * q * f, force, inv)
      noise = jax.tree.map(lambda z, q: scale * jnp.sqrt(q) * z, noise, inv)
    drift, noise = apply_mask(drift), apply_mask(noise)
    new_params = jax.tree.map(lambda w, d, z: (w - d + z).astype(w.dtype), params, drift, noise)
    if bounding_box is not None:
      new_params = jax.tree.map(
          lambda w, c: jnp.clip(w, c - bounding_box, c + bounding_box).astype(w.dtype),
          new_params, center)
    diff_sq = _sq_norm(jax.tree.map(jnp.subtract, params, center))
    info = SGLDInfo(loss=loss, distance=jnp.sqrt(diff_sq), grad_norm=jnp.sqrt(_sq_norm(grad)),
                    noise_norm=jnp.sqrt(_sq_norm(noise)), drift_norm=jnp.sqrt(_sq_norm(drift)))
    return SGLDState(new_params, center, precond, state.step + 1), info

  return update


def build_kernel(loss_fn: LossFn, *, step_size: Scalar, nbeta: Scalar, gamma: Scalar,
                 noise_level: Scalar = 1.0, weight_decay: Scalar = 0.0, mask: PyTree = None,
                 preconditioner=None, bounding_box: Optional[Scalar] = None):
  """Builds one SGLD step, in the blackjax manner (a pure closure).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    step_size: ε.
    nbeta: nβ, the product of sample size and inverse temperature.
    gamma: localization strength γ (pull towards the center w*).
    noise_level: multiplies the noise standard deviation (1 samples the posterior).
    weight_decay: λ_wd of a Gaussian prior centred at zero (adds λ_wd·w to the drift).
    mask: None, or a pytree (a prefix of params is fine) of bools / bool arrays broadcastable to
      the parameters: False coordinates never move (weight-restricted LLC).
    preconditioner: None, ``"rmsprop"`` or an :class:`RMSProp`; the state must come from
      :func:`init` with the same choice.
    bounding_box: None, or b > 0: after each step w is clipped to [w* − b, w* + b].

  Hyperparameters may be traced arrays (the calibration sweep vmaps over them).

  Returns:
    ``kernel(key, state, batch) -> (state, info)``: one value-and-gradient evaluation of
    ``loss_fn`` at ``state.params`` on ``batch``, then the update. ``key`` drives the noise
    only. ``info`` is an :class:`SGLDInfo` of the pre-step point.

  Example::

    state = sgld.init(params)
    kernel = jax.jit(sgld.build_kernel(loss_fn, step_size=1e-4, nbeta=100.0, gamma=10.0))
    state, info = kernel(jax.random.key(0), state, batch)
  """
  update = _make_update(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                        weight_decay=weight_decay, mask=mask, preconditioner=preconditioner,
                        bounding_box=bounding_box)

  def kernel(key, state: SGLDState, batch):
    loss, grad = jax.value_and_grad(loss_fn)(state.params, batch)
    return update(key, state, loss, grad)

  return kernel


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
    return _sq_norm(jax.tree.map(lambda x, y, g: x - y + 0.5 * step_size * g, a, b, grad_b))

  log_q_backward = -sq_dist(prev_params, params, force) / (2.0 * step_size)
  log_q_forward = -sq_dist(params, prev_params, prev_force) / (2.0 * step_size)
  log_ratio = prev_potential - potential + log_q_backward - log_q_forward
  return jnp.exp(jnp.minimum(log_ratio, 0.0))


def _num_examples(data) -> int:
  sizes = {x.shape[0] for x in jax.tree.leaves(data)}
  if len(sizes) != 1:
    raise ValueError(f"data leaves must share the leading example axis, got sizes {sizes}")
  return sizes.pop()


def _minibatch(data, key, batch_size: int, num_examples: int):
  if batch_size == num_examples:
    return data
  # Uniform with replacement; the modulo bias is below n/2³², negligible for any dataset here.
  index = (jax.random.bits(key, (batch_size,), jnp.uint32) % num_examples).astype(jnp.int32)
  return jax.tree.map(lambda x: jnp.take(x, index, axis=0), data)


def run_chains(loss_fn: LossFn, params: PyTree, data: PyTree, chain_keys: jax.Array, *,
               step_size: Scalar, nbeta: Scalar, gamma: Scalar, num_draws: int, batch_size: int,
               noise_level: Scalar = 1.0, weight_decay: Scalar = 0.0, mask: PyTree = None,
               preconditioner=None, bounding_box: Optional[Scalar] = None,
               compute_mala: Union[bool, str] = False, chain_map: str = "vmap") -> ChainTrace:
  """Runs SGLD chains from ``params`` and records per-draw diagnostics (pure, jittable).

  Chain c starts at w* = ``params`` and runs ``num_draws`` steps; draw t uses
  ``fold_in(chain_keys[c], t)`` for its minibatch indices and noise. No Python side effects:
  the function can be jitted (``num_draws``, ``batch_size``, ``chain_map``, ``compute_mala``,
  ``preconditioner`` static), vmapped over ``params`` (e.g. a leading checkpoint axis) or over
  the hyperparameters, and ``chain_keys`` can be sharded over devices.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    params: the point w* (pytree).
    data: pytree of arrays with a leading example axis (the sampling dataset).
    chain_keys: PRNG keys with leading axis num_chains (``jax.random.split(key, C)``).
    step_size, nbeta, gamma, noise_level, weight_decay, mask, preconditioner, bounding_box:
      see :func:`build_kernel`.
    num_draws: number of SGLD steps per chain (each records one draw).
    batch_size: minibatch size m (``== n`` for full batch).
    compute_mala: also record MALA acceptance probabilities of the SGLD moves, with
      U = nβ L_m + (γ/2)‖w − w*‖² + (λ_wd/2)‖w‖² (:func:`mala_acceptance_probability`).
      ``True`` or ``"consecutive"``: devinterp's pairing; draw t records the move w_{t−1} → w_t
      (NaN at t = 0) from the losses and gradients the chain computes anyway, so no extra
      gradient, only two parameter copies per chain in the loop carry. With minibatches the two
      potentials come from different batches and the acceptance mostly measures minibatch
      noise (as in devinterp); with full batch it is exact. ``"same_batch"``: draw t records
      the move w_t → w_{t+1} with both potentials on batch t, which isolates the discretisation
      error at the cost of one extra value-and-gradient per draw.
    chain_map: ``"vmap"`` (chains as one batched computation) or ``"map"`` (``lax.map``, one
      chain after the other: less memory).

  Returns:
    :class:`ChainTrace` with arrays of shape [num_chains, num_draws].
  """
  num_examples = _num_examples(data)
  if not 0 < batch_size <= num_examples:
    raise ValueError(f"batch_size must be in [1, {num_examples}], got {batch_size}")
  if num_draws < 1:
    raise ValueError(f"num_draws must be >= 1, got {num_draws}")
  if chain_map not in ("vmap", "map"):
    raise ValueError(f"chain_map must be 'vmap' or 'map', got {chain_map!r}")
  if compute_mala is True:
    compute_mala = "consecutive"
  if compute_mala not in (False, "consecutive", "same_batch"):
    raise ValueError(f"compute_mala must be False, True, 'consecutive' or 'same_batch', got "
                     f"{compute_mala!r}")
  masks = None if mask is None else _expand_mask(mask, params)
  update = _make_update(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                        weight_decay=weight_decay, mask=mask, preconditioner=preconditioner,
                        bounding_box=bounding_box)
  value_and_grad = jax.value_and_grad(loss_fn)

  def mala_point(w, loss, grad):
    """(w, ∇U(w), U(w)) in float32, ∇U masked like the drift."""
    force = jax.tree.map(lambda g, x, c: nbeta * g + gamma * (x - c) + weight_decay * x,
                         grad, w, params)
    if masks is not None:
      force = jax.tree.map(lambda m, f: jnp.where(m, f, jnp.zeros_like(f)), masks, force)
    potential = (nbeta * loss + 0.5 * gamma * _sq_norm(jax.tree.map(jnp.subtract, w, params))
                 + 0.5 * weight_decay * _sq_norm(w))
    return jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.float32), (w, force, potential))

  def one_chain(chain_key):
    state = init(params, preconditioner=preconditioner)

    def body(carry, t):
      state, previous = carry
      batch_key, noise_key = jax.random.split(jax.random.fold_in(chain_key, t))
      batch = _minibatch(data, batch_key, batch_size, num_examples)
      loss, grad = value_and_grad(state.params, batch)
      new_state, info = update(noise_key, state, loss, grad)
      mala = None
      if compute_mala == "consecutive":
        current = mala_point(state.params, loss, grad)
        mala = mala_acceptance_probability(*previous, *current, step_size)
        mala = jnp.where(t == 0, jnp.nan, mala)
        previous = current
      elif compute_mala == "same_batch":
        moved_loss, moved_grad = value_and_grad(new_state.params, batch)
        mala = mala_acceptance_probability(*mala_point(state.params, loss, grad),
                                           *mala_point(new_state.params, moved_loss, moved_grad),
                                           step_size)
      return (new_state, previous), ChainTrace(*info, mala=mala)

    previous = None
    if compute_mala == "consecutive":
      previous = mala_point(params, jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    _, trace = jax.lax.scan(body, (state, previous), jnp.arange(num_draws))
    return trace

  if chain_map == "vmap":
    return jax.vmap(one_chain)(chain_keys)
  return jax.lax.map(one_chain, chain_keys)


def init_loss(loss_fn: LossFn, params: PyTree, data: PyTree, *, batch_size: int,
              num_batches: Optional[int] = None) -> jax.Array:
  """L_n(w*): the mean loss over the sampling dataset, evaluated in batches (pure, jittable).

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    params: the point w*.
    data: pytree with a leading example axis of size n.
    batch_size: evaluation batch size (memory only: the result is the mean over the examples).
    num_batches: None for the whole dataset (a last partial batch is weighted by its size), or
      k for the mean over the first k·batch_size examples.

  Returns:
    Scalar float32. Vmappable over ``params``.
  """
  num_examples = _num_examples(data)
  if num_batches is None:
    num_full, remainder = divmod(num_examples, batch_size)
  else:
    if not 0 < num_batches * batch_size <= num_examples:
      raise ValueError(f"num_batches·batch_size = {num_batches * batch_size} must be in "
                       f"[1, {num_examples}]")
    num_full, remainder = num_batches, 0
  total = jnp.zeros((), jnp.float32)
  if num_full:
    cut = num_full * batch_size
    batches = jax.tree.map(lambda x: x[:cut].reshape(num_full, batch_size, *x.shape[1:]), data)
    losses = jax.lax.map(lambda batch: loss_fn(params, batch), batches)
    total = total + jnp.sum(losses.astype(jnp.float32)) * batch_size
  if remainder:
    tail = jax.tree.map(lambda x: x[num_full * batch_size:], data)
    total = total + loss_fn(params, tail).astype(jnp.float32) * remainder
  return total / (num_full * batch_size + remainder)
