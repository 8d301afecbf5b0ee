"""Throughput measurements behind ``scripts/benchmark.py`` (each returns a JSON-able dict).

Timings exclude compilation: every function compiles first, runs one warm-up call, then times
``repeats`` calls, blocking on the results, and reports the median. GFLOP/s uses XLA's own cost
analysis of the compiled program, so it counts what the program does, not a formula.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": device.device_kind,
          "num_devices": jax.device_count(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__}


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def flops_of(fn, *args) -> float:
  """XLA's flop count for one call of ``jax.jit(fn)(*args)``.

  Loops (scan/while) are counted once by XLA's cost analysis, so pass loop-free functions.
  """
  return _flops(jax.jit(fn).lower(*args).compile())


def time_compiled(fn, args, repeats: int) -> tuple[float, float]:
  """(median seconds per call, XLA flops per call) of ``jax.jit(fn)(*args)``."""
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), _flops(compiled)


def train_throughput(config, *, num_steps: int = 20, repeats: int = 5) -> dict:
  """Training steps/s for the model and batch size of ``config`` (a training ConfigDict)."""
  import optax  # pylint: disable=import-outside-toplevel
  from jaxdev import tasks, train  # pylint: disable=import-outside-toplevel

  task = tasks.make_task(config)
  optimizer = train.make_optimizer(config.optim)
  params = task.init(jax.random.PRNGKey(0))
  opt_state = optimizer.init(params)
  key = jax.random.PRNGKey(1)

  def step_fn(carry, step):
    params, opt_state = carry
    batch = task.train_batch(jax.random.fold_in(key, step))
    loss, grads = jax.value_and_grad(task.loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  def run(params, opt_state):
    return jax.lax.scan(step_fn, (params, opt_state), jnp.arange(num_steps))[1]

  seconds, _ = time_compiled(run, (params, opt_state), repeats)
  flops = num_steps * flops_of(step_fn, (params, opt_state), jnp.int32(0))
  return {"benchmark": "train", "batch_size": config.optim.batch_size,
          "steps_per_s": num_steps / seconds, "ms_per_step": 1e3 * seconds / num_steps,
          "gflops_per_s": flops / seconds / 1e9, **machine()}
