"""SGLD chains as ``lax.scan`` over the public kernel, minibatches and L_n(w*) (pure, jittable)."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxdev.errors import ConfigError
from jaxdev.sgld import checks
from jaxdev.sgld.kernel import LossFn
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.kernel import Scalar
from jaxdev.sgld.kernel import build_kernel
from jaxdev.sgld.kernel import init
from jaxdev.sgld.mala import mala_acceptance_probability
from jaxdev.sgld.mala import mala_point


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
    observables: [num_chains, num_draws, O]: the observables φ(w_t) on the draw's minibatch, at
      the pre-step weights (the point whose loss is ``loss``), or None when not asked for.
  """
  loss: jax.Array
  distance: jax.Array
  grad_norm: jax.Array
  noise_norm: jax.Array
  drift_norm: jax.Array
  mala: Optional[jax.Array] = None
  observables: Optional[jax.Array] = None


def num_examples(data) -> int:
  """The size n of the leading example axis shared by every leaf of ``data``."""
  sizes = {x.shape[0] for x in jax.tree.leaves(data)}
  if len(sizes) != 1:
    raise ConfigError(f"data leaves must share the leading example axis, got sizes {sizes}")
  return sizes.pop()


def minibatch(data, key, batch_size: int, size: int):
  """``batch_size`` examples drawn uniformly with replacement (all of them, in order, if
  ``batch_size == size``)."""
  if batch_size == size:
    return data
  # Uniform with replacement; the modulo bias is below n/2³², negligible for any dataset here.
  index = (jax.random.bits(key, (batch_size,), jnp.uint32) % size).astype(jnp.int32)
  return jax.tree.map(lambda x: jnp.take(x, index, axis=0), data)


def draw_keys(chain_key, t):
  """(batch key, noise key) of draw ``t`` of the chain with key ``chain_key``."""
  return jax.random.split(jax.random.fold_in(chain_key, t))


def run_chains(loss_fn: LossFn, params: PyTree, data: PyTree, chain_keys: jax.Array, *,
               step_size: Scalar, nbeta: Scalar, gamma: Scalar, num_draws: int, batch_size: int,
               noise_level: Scalar = 1.0, weight_decay: Scalar = 0.0, mask: PyTree = None,
               preconditioner=None, bounding_box: Optional[Scalar] = None,
               compute_mala: Union[bool, str] = False, chain_map: str = "vmap",
               observables: Optional[Callable] = None) -> ChainTrace:
  """Runs SGLD chains from ``params`` and records per-draw diagnostics (pure, jittable).

  Chain c starts at w* = ``params`` (:func:`jaxdev.sgld.init`) and applies the kernel of
  :func:`jaxdev.sgld.build_kernel` ``num_draws`` times under ``lax.scan``; draw t uses
  ``split(fold_in(chain_keys[c], t))`` = (batch key, noise key) for its minibatch indices and
  the kernel's noise. No Python side effects: the function can be jitted (``num_draws``,
  ``batch_size``, ``chain_map``, ``compute_mala``, ``preconditioner`` static), vmapped over
  ``params`` (e.g. a leading checkpoint axis) or over the hyperparameters, and ``chain_keys``
  can be sharded over devices.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    params: the point w* (pytree).
    data: pytree of arrays with a leading example axis (the sampling dataset).
    chain_keys: PRNG keys with leading axis num_chains (``jax.random.split(key, C)``).
    step_size, nbeta, gamma, noise_level, weight_decay, mask, preconditioner, bounding_box:
      see :func:`jaxdev.sgld.build_kernel`.
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
    observables: None, or ``observables(params, batch) -> [O]``: quantities recorded at every
      draw on the same minibatch and weights as the loss (e.g. the mean loss at each position of
      a sequence, whose mean over positions is the loss). They do not act on the chain.

  Returns:
    :class:`ChainTrace` with arrays of shape [num_chains, num_draws] (``observables``
    [num_chains, num_draws, O]).

  Raises:
    ConfigError: sizes or concrete hyperparameters out of range.
  """
  size = num_examples(data)
  if not 0 < batch_size <= size:
    raise ConfigError(f"batch_size must be in [1, {size}], got {batch_size}")
  checks.check_count("num_draws", num_draws)
  if chain_map not in ("vmap", "map"):
    raise ConfigError(f"chain_map must be 'vmap' or 'map', got {chain_map!r}")
  compute_mala = checks.check_compute_mala(compute_mala)
  kernel = build_kernel(loss_fn, step_size=step_size, nbeta=nbeta, gamma=gamma,
                        noise_level=noise_level, weight_decay=weight_decay, mask=mask,
                        preconditioner=preconditioner, bounding_box=bounding_box)
  value_and_grad = jax.value_and_grad(loss_fn)
  point = functools.partial(mala_point, center=params, nbeta=nbeta, gamma=gamma,
                            weight_decay=weight_decay, mask=mask)

  def one_chain(chain_key):
    def body(carry, t):
      state, previous = carry
      batch_key, noise_key = draw_keys(chain_key, t)
      batch = minibatch(data, batch_key, batch_size, size)
      loss_and_grad = value_and_grad(state.params, batch) if compute_mala else None
      new_state, info = kernel(noise_key, state, batch, loss_and_grad)
      mala = None
      if compute_mala == "consecutive":
        current = point(state.params, *loss_and_grad)
        mala = mala_acceptance_probability(*previous, *current, step_size)
        mala = jnp.where(t == 0, jnp.nan, mala)
        previous = current
      elif compute_mala == "same_batch":
        moved = value_and_grad(new_state.params, batch)
        mala = mala_acceptance_probability(*point(state.params, *loss_and_grad),
                                           *point(new_state.params, *moved), step_size)
      observed = None if observables is None else observables(state.params, batch)
      return (new_state, previous), ChainTrace(*info, mala=mala, observables=observed)

    previous = None
    if compute_mala == "consecutive":
      previous = point(params, jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    state = init(params, preconditioner=preconditioner)
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
    Scalar float32. Vmappable over ``params``. ``loss_fn`` may also return a vector of means
    (observables, [O]): the result is then the vector [O] of their means, batched the same way.
  """
  size = num_examples(data)
  if num_batches is None:
    num_full, remainder = divmod(size, batch_size)
  else:
    if not 0 < num_batches * batch_size <= size:
      raise ConfigError(f"num_batches·batch_size = {num_batches * batch_size} must be in "
                        f"[1, {size}]")
    num_full, remainder = num_batches, 0
  total = jnp.zeros((), jnp.float32)  # broadcasts to a vector of observables
  if num_full:
    cut = num_full * batch_size
    batches = jax.tree.map(lambda x: x[:cut].reshape(num_full, batch_size, *x.shape[1:]), data)
    losses = jax.lax.map(lambda batch: loss_fn(params, batch), batches)
    total = total + jnp.sum(losses.astype(jnp.float32), axis=0) * batch_size
  if remainder:
    tail = jax.tree.map(lambda x: x[num_full * batch_size:], data)
    total = total + loss_fn(params, tail).astype(jnp.float32) * remainder
  return total / (num_full * batch_size + remainder)


def hyperparameters(step_size, nbeta, gamma, noise_level, weight_decay) -> dict:
  """Hyperparameters as float32 arrays: traced, so new values do not recompile."""
  values = dict(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                weight_decay=weight_decay)
  return {name: jnp.asarray(value, jnp.float32) for name, value in values.items()}


_STATIC = ("loss_fn", "num_draws", "batch_size", "num_init_loss_batches", "preconditioner",
           "compute_mala", "chain_map", "grid_map", "observables")


def sample_chains(params, data, chain_keys, hyper, mask, bounding_box, *, loss_fn, num_draws,
                  batch_size, num_init_loss_batches, preconditioner, compute_mala,
                  chain_map="vmap", grid_map=None, observables=None):
  """Chains (over a grid of hyperparameters when ``grid_map`` is set) and L_n(w*) (pure).

  The one program behind :func:`jaxdev.sgld.estimate_llc`, :func:`jaxdev.sgld.calibrate` and
  the LLC sweep (:func:`jaxdev.llc.build_estimator`, which maps it over checkpoints): the
  hyperparameters ``hyper`` (a dict from :func:`hyperparameters`, with a leading grid axis when
  ``grid_map`` is ``"vmap"`` or ``"map"``), ``mask`` and ``bounding_box`` are arguments, not
  constants, so a jitted caller does not recompile for new values of them; the keyword
  arguments are the static ones.

  With ``observables`` (see :func:`run_chains`), the trace records them at every draw and their
  values at w* come back as φ_n(w*) [O], evaluated on the batches of L_n(w*).

  Returns:
    ``(ChainTrace, L_n(w*))``, or ``(ChainTrace, L_n(w*), φ_n(w*))`` with ``observables``.
  """
  def chains(h):
    return run_chains(loss_fn, params, data, chain_keys, **h, num_draws=num_draws,
                      batch_size=batch_size, mask=mask, preconditioner=preconditioner,
                      bounding_box=bounding_box, compute_mala=compute_mala, chain_map=chain_map,
                      observables=observables)

  if grid_map is None:
    trace = chains(hyper)
  elif grid_map == "vmap":
    trace = jax.vmap(chains)(hyper)
  else:
    trace = jax.lax.map(chains, hyper)
  loss0 = init_loss(loss_fn, params, data, batch_size=batch_size,
                    num_batches=num_init_loss_batches)
  if observables is None:
    return trace, loss0
  return trace, loss0, init_loss(observables, params, data, batch_size=batch_size,
                                 num_batches=num_init_loss_batches)


#: :func:`sample_chains` jitted; the compiled program is cached per ``loss_fn`` object and
#: static settings.
sample = jax.jit(sample_chains, static_argnames=_STATIC)
