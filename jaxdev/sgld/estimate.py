"""The LLC at one point: :func:`estimate_llc`, one jitted program and a host-side summary."""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence, Union

import jax

from jaxdev.sgld import checks
from jaxdev.sgld.chains import hyperparameters
from jaxdev.sgld.chains import sample
from jaxdev.sgld.kernel import LossFn
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.kernel import default_nbeta
from jaxdev.sgld.precondition import resolve_preconditioner
from jaxdev.sgld.summary import LLCResult
from jaxdev.sgld.summary import LLCWarning
from jaxdev.sgld.summary import summarize
from jaxdev.sgld.summary import summarize_observables


def emit(messages: Sequence[str]) -> None:
  """Issues each message as an :class:`LLCWarning` (attributed to the caller's caller)."""
  for message in messages:
    warnings.warn(message, LLCWarning, stacklevel=3)


def estimate_llc(loss_fn: LossFn, params: PyTree, data: PyTree, key: jax.Array, *,
                 step_size: float, gamma: float, num_chains: int, num_draws: int,
                 batch_size: int, nbeta: Optional[float] = None, num_burnin: int = 0,
                 thin: int = 1, num_init_loss_batches: Optional[int] = None,
                 noise_level: float = 1.0, weight_decay: float = 0.0, mask: PyTree = None,
                 preconditioner=None, bounding_box: Optional[float] = None,
                 compute_mala: Union[bool, str] = False, chain_map: str = "vmap",
                 observables: Optional[Callable] = None, warn: bool = True) -> LLCResult:
  """Estimates the local learning coefficient λ̂(w*) of ``loss_fn`` at ``params``.

  One jitted call runs all chains (:func:`jaxdev.sgld.run_chains` with ``chain_keys =
  split(key, num_chains)``) and L_n(w*) (:func:`jaxdev.sgld.init_loss`);
  :func:`jaxdev.sgld.summarize` turns the traces into an :class:`LLCResult` on the host. The
  compiled program is cached per ``loss_fn`` object and static settings, so re-estimating at
  other parameters or hyperparameters does not recompile.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
    params: the point w*.
    data: pytree with a leading example axis: the sampling dataset.
    key: PRNG key; the same key gives the same numbers, and the same batches and noise at any w*.
    step_size: ε > 0.
    gamma: localization γ ≥ 0.
    num_chains: number of independent chains C ≥ 1.
    num_draws: SGLD steps per chain (burn-in included), ≥ 1.
    batch_size: SGLD minibatch size m (also the batch size for L_n(w*)), 1 ≤ m ≤ n.
    nbeta: nβ > 0; None uses m / ln m.
    num_burnin: leading draws excluded from the estimate, 0 ≤ num_burnin < num_draws.
    thin: keep every ``thin``-th draw after burn-in.
    num_init_loss_batches: None: L_n(w*) over the whole dataset; k: over its first k batches.
    noise_level, weight_decay, mask, preconditioner, bounding_box: see
      :func:`jaxdev.sgld.build_kernel`.
    compute_mala: False, True / ``"consecutive"`` (devinterp's, free) or ``"same_batch"`` (one
      extra gradient per draw): record MALA acceptance probabilities in
      ``result.diagnostics["mala"]`` and their mean in ``["mala_mean"]`` (see
      :func:`jaxdev.sgld.run_chains`).
    chain_map: ``"vmap"`` or ``"map"`` over chains.
    observables: None, or ``observables(params, batch) -> [O]`` recorded at every draw (see
      :func:`jaxdev.sgld.run_chains`); ``result.observables`` is then the dict of
      :func:`jaxdev.sgld.summarize_observables` (their LLC contributions and susceptibilities)
      with the traces under ``"trace"`` [C, T, O].
    warn: also issue each message of ``result.warnings`` as an :class:`LLCWarning`.

  Returns:
    :class:`LLCResult` (failed chains are reported and excluded, never raised).

  Raises:
    jaxdev.errors.ConfigError: an argument out of range (before any computation).

  Example::

    result = sgld.estimate_llc(loss_fn, params, data, jax.random.key(0), step_size=1e-4,
                               gamma=100.0, num_chains=8, num_draws=1000, batch_size=256)
    print(result)                       # λ̂ = mean ± std over chains
    sgld.plot_trace(result)
  """
  checks.check_estimate(step_size=step_size, nbeta=1.0 if nbeta is None else nbeta, gamma=gamma,
                        num_chains=num_chains, num_draws=num_draws, batch_size=batch_size,
                        num_burnin=num_burnin, thin=thin, noise_level=noise_level,
                        weight_decay=weight_decay, bounding_box=bounding_box,
                        compute_mala=compute_mala)
  preconditioner = resolve_preconditioner(preconditioner)
  nbeta = default_nbeta(batch_size) if nbeta is None else float(nbeta)
  chain_keys = jax.random.split(key, num_chains)
  out = sample(
      params, data, chain_keys, hyperparameters(step_size, nbeta, gamma, noise_level,
                                                weight_decay), mask,
      bounding_box, loss_fn=loss_fn, num_draws=num_draws, batch_size=batch_size,
      num_init_loss_batches=num_init_loss_batches,
      preconditioner=preconditioner, compute_mala=checks.check_compute_mala(compute_mala),
      chain_map=chain_map, observables=observables)
  trace, loss0 = jax.device_get(out[:2])
  result = summarize(trace, float(loss0), nbeta=nbeta, num_burnin=num_burnin, thin=thin)
  if observables is not None:
    result.observables = summarize_observables(trace.observables, trace.loss,
                                               jax.device_get(out[2]), nbeta=nbeta,
                                               num_burnin=num_burnin, thin=thin)
    result.observables["trace"] = trace.observables
  if warn:
    emit(result.warnings)
  return result
