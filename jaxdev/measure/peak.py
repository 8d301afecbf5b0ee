"""The machine's limits, measured with XLA itself: matmul GFLOP/s in float32 and in bfloat16
(float32 accumulation), square and at the models' shapes, and memory bandwidth.

The other benchmarks report their GFLOP/s also as a fraction of the square-matmul peak in their
matmul precision, measured here in the same process (:func:`reference_peak`), so that figures
from different machines can be read against what each machine can do.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdev.measure import timing

#: (name, m, k, n): square products and the models' own ones. "regression_qkv" is the paper's
#: regression transformer's attention input projection over a 1,024-sequence SGLD batch
#: (1,024 × 8 tokens of width 64 → 3 × 64); "language_unembed" is the CPU-scale LM's output
#: layer over a batch of 8 × 128 tokens (width 128 → 1,024 ids).
SHAPES = (
    ("square_1024", 1024, 1024, 1024),
    ("square_2048", 2048, 2048, 2048),
    ("regression_qkv", 8192, 64, 192),
    ("language_unembed", 1024, 128, 1024),
)
DTYPES = ("float32", "bfloat16")


def matmul_gflops(m: int, k: int, n: int, dtype: str = "float32", *, repeats: int = 5) -> float:
  """GFLOP/s of one [m, k] @ [k, n] product with inputs in ``dtype`` and float32 accumulation
  and output (2·m·k·n flops a call)."""
  a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32).astype(dtype)
  product = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  seconds = timing.median_seconds(lambda: product(a, b), repeats)
  return 2.0 * m * k * n / seconds / 1e9


def memory_gbytes_per_s(num_floats: int = 1 << 26, *, repeats: int = 5) -> float:
  """GB/s of an elementwise float32 pass that reads and writes ``num_floats`` numbers (x·a + b,
  256 MiB each way by default: far beyond the caches)."""
  x = jnp.ones((num_floats,), jnp.float32)
  scale = jax.jit(lambda x: x * 1.0001 + 0.5)
  seconds = timing.median_seconds(lambda: scale(x), repeats)
  return 2.0 * 4 * num_floats / seconds / 1e9


def peak(*, repeats: int = 5) -> dict:
  """Every matmul of :data:`SHAPES` in each of :data:`DTYPES`, and the memory bandwidth: a
  JSON-able dict with the machine."""
  record = {"benchmark": "peak"}
  for name, m, k, n in SHAPES:
    for dtype in DTYPES:
      record[f"{name}_{dtype}_gflops_per_s"] = matmul_gflops(m, k, n, dtype, repeats=repeats)
  record["memory_gbytes_per_s"] = memory_gbytes_per_s(repeats=repeats)
  return {**record, **timing.machine()}


@functools.lru_cache(maxsize=None)
def reference_peak(dtype: str = "float32") -> float:
  """This process's peak in ``dtype`` (inputs; float32 sums) for the other benchmarks' fraction:
  the best of the square products of :data:`SHAPES`, GFLOP/s (measured once per process)."""
  return max(matmul_gflops(m, k, n, dtype) for name, m, k, n in SHAPES
             if name.startswith("square"))


def with_fraction(record: dict, key: str = "gflops_per_s") -> dict:
  """``record`` with ``fraction_of_peak``: ``record[key]`` over :func:`reference_peak` in the
  record's ``matmul_dtype`` (float32 when it has none), and the peak itself as
  ``peak_gflops_per_s``."""
  reference = reference_peak(record.get("matmul_dtype", "float32"))
  return {**record, "peak_gflops_per_s": reference,
          "fraction_of_peak": record[key] / reference}
