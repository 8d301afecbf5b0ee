"""Checks of the sampler's arguments at the API boundary (one clear error, before any work).

Hyperparameters may be traced arrays (a calibration grid vmaps over them); only concrete
values are checked, traced ones pass through.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np

from jaxdev.errors import ConfigError


def _concrete(value):
  """``value`` as a float64 numpy array, or None when it is traced."""
  try:
    return np.asarray(value, np.float64)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_hyperparameters(*, step_size, nbeta, gamma, noise_level=1.0, weight_decay=0.0,
                          bounding_box=None) -> None:
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
    array = _concrete(value)
    if array is None:
      continue
    bad = ~(np.isfinite(array) & rule(array))
    if bad.any():
      shown = array.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
      raise ConfigError(f"{name} must be finite and {text}, got {shown:g}")


def check_count(name: str, value, minimum: int = 1) -> int:
  """``value`` as an int, or ConfigError unless it is an integer ≥ ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
    if not (isinstance(value, float) and math.isfinite(value) and value == int(value)):
      raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
  if value < minimum:
    raise ConfigError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def check_chain_settings(*, num_chains, num_draws, batch_size, num_burnin=0, thin=1) -> None:
  """Raises ConfigError unless chains, draws, batch size and thinning are ≥ 1 and
  0 ≤ num_burnin < num_draws."""
  check_count("num_chains", num_chains)
  num_draws = check_count("num_draws", num_draws)
  check_count("batch_size", batch_size)
  check_count("thin", thin)
  num_burnin = check_count("num_burnin", num_burnin, minimum=0)
  if num_burnin >= num_draws:
    raise ConfigError(f"num_burnin ({num_burnin}) must be below num_draws ({num_draws})")


def check_estimate(*, step_size, nbeta, gamma, num_chains, num_draws, batch_size, num_burnin=0,
                   thin=1, noise_level=1.0, weight_decay=0.0, bounding_box=None) -> None:
  """All checks of one estimate (or of a grid, given arrays of hyperparameters)."""
  check_chain_settings(num_chains=num_chains, num_draws=num_draws, batch_size=batch_size,
                       num_burnin=num_burnin, thin=thin)
  check_hyperparameters(step_size=step_size, nbeta=nbeta, gamma=gamma, noise_level=noise_level,
                        weight_decay=weight_decay, bounding_box=bounding_box)


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
