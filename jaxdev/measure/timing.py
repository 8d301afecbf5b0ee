"""The one timing loop of the measurements, and XLA's flop counts."""

from __future__ import annotations

import platform
import time
from typing import Callable

import jax
import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 1,
                   sync: Callable[[object], object] = jax.block_until_ready) -> float:
  """Median wall seconds of ``fn()`` over ``repeats`` timed calls, after ``warmup`` untimed ones.

  Args:
    fn: the call to time (compiled already, or compiled by its first warm-up call).
    repeats: timed calls (≥ 1).
    warmup: untimed calls first (compilation, caches).
    sync: waits for ``fn``'s result (default: ``jax.block_until_ready``, since JAX dispatches
      asynchronously).

  Returns:
    Median seconds per call.
  """
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def time_compiled(fn, args, repeats: int) -> tuple[float, float]:
  """(median seconds per call, XLA flops per call) of ``jax.jit(fn)(*args)``, compiled once."""
  compiled = jax.jit(fn).lower(*args).compile()
  return median_seconds(lambda: compiled(*args), repeats), compiled_flops(compiled)


def compiled_flops(compiled, key: str = "flops") -> float:
  """XLA's flop count of a compiled program (NaN when the backend reports none); with ``key``
  "bytes accessed", the bytes its operations read and write (every operation's operands and
  result, as if none stayed in a cache: an upper bound of the memory traffic).

  Loops (scan/while) are counted once by XLA's cost analysis: a scanned program counts one
  iteration.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get(key, float("nan"))) if analysis else float("nan")


def flops_of(fn, *args) -> float:
  """XLA's flop count for one call of ``jax.jit(fn)(*args)`` (see :func:`compiled_flops`)."""
  return compiled_flops(jax.jit(fn).lower(*args).compile())


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": device.device_kind,
          "num_devices": jax.device_count(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__}
