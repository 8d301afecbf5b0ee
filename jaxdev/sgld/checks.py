"""Checks of the sampler's arguments at the API boundary (one clear error, before any work).

Every entry point of the sampler (:func:`jaxdev.sgld.estimate_llc`, :func:`jaxdev.sgld.calibrate`,
:func:`jaxdev.sgld.build_kernel`) and the LLC sweep's settings
(:meth:`jaxdev.llc.SweepSettings.resolved`) check their values here, and a bad one raises
:class:`jaxdev.errors.ConfigError`. ``prefix`` names where the values came from in the message
(e.g. ``"sgld."`` for the sweep config's section).

Hyperparameters may be traced arrays (a calibration grid vmaps over them); only concrete
values are checked, traced ones pass through.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np

from jaxdev.errors import ConfigError

#: The values of ``compute_mala`` and what each means (see :func:`jaxdev.sgld.run_chains`).
MALA_PAIRINGS = ("consecutive", "same_batch")


def _concrete(value):
  """``value`` as a float64 numpy array, or None when it is traced."""
  try:
    return np.asarray(value, np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_hyperparameters(*, step_size, nbeta, gamma, noise_level=1.0, weight_decay=0.0,
                          bounding_box=None, prefix: str = "") -> None:
  """Raises ConfigError unless ε > 0, nβ > 0, γ ≥ 0, noise_level ≥ 0, λ_wd ≥ 0 and box > 0.

  All must be finite; arrays (a grid of values) are checked elementwise.
  """
  rules = [("step_size", step_size, "> 0", lambda x: x > 0),
           ("nbeta", nbeta, "> 0", lambda x: x > 0),
           ("gamma", gamma, ">= 0", lambda x: x >= 0),
           ("noise_level", noise_level, ">= 0", lambda x: x >= 0),
           ("weight_decay", weight_decay, ">= 0", lambda x: x >= 0)]
  if bounding_box is not None:
    rules.append(("bounding_box", bounding_box, "> 0", lambda x: x > 0))
  for name, value, text, rule in rules:
    try:
      array = _concrete(value)
    except (TypeError, ValueError):
      raise ConfigError(f"{prefix}{name} must be a number, got {value!r}") from None
    if array is None:
      continue
    bad = ~(np.isfinite(array) & rule(array))
    if bad.any():
      shown = array.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
      raise ConfigError(f"{prefix}{name} must be finite and {text}, got {shown:g}")


def check_count(name: str, value, minimum: int = 1) -> int:
  """``value`` as an int, or ConfigError unless it is an integer ≥ ``minimum`` (the message
  says "positive" for ``minimum`` 1)."""
  bound = "positive" if minimum == 1 else f">= {minimum}"
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
    if not (isinstance(value, float) and math.isfinite(value) and value == int(value)):
      raise ConfigError(f"{name} must be an integer and {bound}, got {value!r}")
  if value < minimum:
    raise ConfigError(f"{name} must be {bound}, got {value}")
  return int(value)


def check_seed(name: str, value) -> int:
  """``value`` as an int, or ConfigError unless it is an integer in [0, 2³¹) (what every
  random-number generator the package seeds accepts)."""
  value = check_count(name, value, minimum=0)
  if value >= 2 ** 31:
    raise ConfigError(f"{name} must be below 2**31, got {value}")
  return value


def check_chain_settings(*, num_chains, num_draws, batch_size, num_burnin=0, thin=1,
                         prefix: str = "") -> None:
  """Raises ConfigError unless chains, draws, batch size and thinning are ≥ 1,
  0 ≤ num_burnin < num_draws, and at least 2 draws per chain are kept after burn-in and
  thinning."""
  check_count(f"{prefix}num_chains", num_chains)
  num_draws = check_count(f"{prefix}num_draws", num_draws)
  check_count(f"{prefix}batch_size", batch_size)
  check_count(f"{prefix}thin", thin)
  num_burnin = check_count(f"{prefix}num_burnin", num_burnin, minimum=0)
  if num_burnin >= num_draws:
    raise ConfigError(f"{prefix}num_burnin ({num_burnin}) must be below {prefix}num_draws "
                      f"({num_draws})")
  kept = -(-(num_draws - num_burnin) // int(thin))
  if kept < 2:
    raise ConfigError(f"{prefix}num_draws {num_draws} with {prefix}num_burnin {num_burnin} and "
                      f"{prefix}thin {thin} keeps {kept} draw per chain; an estimate needs at "
                      f"least 2 (its spread and settling check are computed from them)")


def check_rmsprop(alpha, eps, prefix: str = "RMSProp ", initial=0.0) -> tuple:
  """(alpha, eps, initial) as floats, or ConfigError unless 0 ≤ alpha < 1, eps > 0 and
  initial ≥ 0 (finite)."""
  try:
    alpha, eps, initial = float(alpha), float(eps), float(initial)
  except (TypeError, ValueError):
    raise ConfigError(f"{prefix}alpha, {prefix}eps and {prefix}initial must be numbers, got "
                      f"{alpha!r}, {eps!r}, {initial!r}") from None
  if not 0.0 <= alpha < 1.0:
    raise ConfigError(f"{prefix}alpha must be in [0, 1), got {alpha:g}")
  if not (math.isfinite(eps) and eps > 0.0):
    raise ConfigError(f"{prefix}eps must be finite and > 0, got {eps:g}")
  if not (math.isfinite(initial) and initial >= 0.0):
    raise ConfigError(f"{prefix}initial must be finite and >= 0, got {initial:g}")
  return alpha, eps, initial


def check_compute_mala(compute_mala, prefix: str = ""):
  """``compute_mala`` in canonical form: False, ``"consecutive"`` (also for True) or
  ``"same_batch"``; ``"none"`` and None read as False.

  Raises:
    ConfigError: any other value.
  """
  if compute_mala is None or compute_mala is False or compute_mala == "none":
    return False
  if compute_mala is True:
    return "consecutive"
  if isinstance(compute_mala, str) and compute_mala in MALA_PAIRINGS:
    return compute_mala
  raise ConfigError(f"{prefix}compute_mala must be 'none' (False), 'consecutive' (True) or "
                    f"'same_batch', got {compute_mala!r}")


def check_estimate(*, step_size, nbeta, gamma, num_chains, num_draws, batch_size, num_burnin=0,
                   thin=1, noise_level=1.0, weight_decay=0.0, bounding_box=None,
                   compute_mala=False, prefix: str = "") -> None:
  """All checks of one estimate (or of a grid, given arrays of hyperparameters)."""
  check_chain_settings(num_chains=num_chains, num_draws=num_draws, batch_size=batch_size,
                       num_burnin=num_burnin, thin=thin, prefix=prefix)
  check_hyperparameters(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                        weight_decay=weight_decay, bounding_box=bounding_box, prefix=prefix)
  check_compute_mala(compute_mala, prefix)


def check_grid(name: str, values) -> np.ndarray:
  """A calibration axis (numbers or strings such as ``"1e-4"``) as a flat float64 array.

  Raises:
    ConfigError: the axis is empty or holds something that is not a number.
  """
  try:
    array = np.asarray([float(v) for v in np.ravel(np.asarray(values, object))], np.float64)
  except (TypeError, ValueError):
    raise ConfigError(f"{name} must be a list of numbers, got {list(np.ravel(values))}") from None
  if array.size == 0:
    raise ConfigError(f"{name} must hold at least one value")
  return array
