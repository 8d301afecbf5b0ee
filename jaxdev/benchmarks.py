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
  """Training steps/s (and tokens/s for a language config) for the model and batch of ``config``.

  Regression batches are drawn inside the step as in training; a language config is timed on
  random token rows of the configured shape, so no corpus is needed (the model's cost does not
  depend on the token values). Steps run inside one ``lax.scan`` on the default device.
  """
  import optax  # pylint: disable=import-outside-toplevel
  from jaxdev import tasks, train  # pylint: disable=import-outside-toplevel

  optimizer = train.make_optimizer(config.optim)
  key = jax.random.PRNGKey(1)
  if config.task == "language":
    init, loss_fn = tasks.language_model_fns(config)
    rows = jax.random.randint(key, (config.optim.batch_size, config.data.row_length), 0,
                              config.data.vocab_size, dtype=jnp.int32)
    draw = lambda step: rows
  else:
    task = tasks.make_task(config)
    init, loss_fn = task.init, task.loss_fn
    draw = lambda step: task.train_batch(jax.random.fold_in(key, step))
  params = init(jax.random.PRNGKey(0))
  opt_state = optimizer.init(params)

  def step_fn(carry, step):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, draw(step))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  def run(params, opt_state):
    return jax.lax.scan(step_fn, (params, opt_state), jnp.arange(num_steps))[1]

  seconds, _ = time_compiled(run, (params, opt_state), repeats)
  flops = num_steps * flops_of(step_fn, (params, opt_state), jnp.int32(0))
  result = {"benchmark": "train", "task": config.task, "batch_size": config.optim.batch_size,
            "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
            "steps_per_s": num_steps / seconds, "ms_per_step": 1e3 * seconds / num_steps,
            "gflops_per_s": flops / seconds / 1e9, **machine()}
  if config.task == "language":
    tokens = config.optim.batch_size * (config.data.row_length - 1)  # predicted tokens per step
    result["tokens_per_step"] = tokens
    result["tokens_per_s"] = tokens * num_steps / seconds
    result["hours_for_run"] = config.optim.num_steps * seconds / num_steps / 3600
  return result


def gradient_flops(task, params, data, batch_size: int) -> float:
  """XLA's flop count of one loss-and-gradient evaluation on a minibatch (one chain-step's work)."""
  batch = jax.tree_util.tree_map(lambda x: x[:batch_size], data)
  return flops_of(jax.value_and_grad(task.loss_fn), params, batch)


def _regression_sampling(config, num_examples: int):
  from jaxdev import tasks  # pylint: disable=import-outside-toplevel
  task = tasks.make_task(config)
  params = task.init(jax.random.PRNGKey(0))
  data = task.sampling_data(0, num_examples)
  return task, params, data


def sgld_throughput(config, *, batch_size: int, num_chains: int, num_draws: int,
                    chain_map: str = "vmap", repeats: int = 3) -> dict:
  """Chain-steps/s of :func:`jaxdev.sgld.run_chains` on the model of ``config``."""
  from jaxdev import sgld  # pylint: disable=import-outside-toplevel
  task, params, data = _regression_sampling(config, max(8 * batch_size, 8192))
  keys = jax.random.split(jax.random.PRNGKey(1), num_chains)
  kwargs = dict(step_size=3e-4, nbeta=66.67, gamma=6.67, batch_size=batch_size,
                chain_map=chain_map)

  def run(params, data, keys):
    return sgld.run_chains(task.loss_fn, params, data, keys, num_draws=num_draws, **kwargs).loss

  seconds, _ = time_compiled(run, (params, data, keys), repeats)
  flops = num_chains * num_draws * gradient_flops(task, params, data, batch_size)
  return {"benchmark": "sgld", "batch_size": batch_size, "num_chains": num_chains,
          "num_draws": num_draws, "chain_map": chain_map,
          "chain_steps_per_s": num_chains * num_draws / seconds,
          "ms_per_chain_step": 1e3 * seconds / (num_chains * num_draws),
          "gflops_per_s": flops / seconds / 1e9, **machine()}


def sweep_throughput(config, *, num_checkpoints: int, batch_size: int, num_chains: int,
                     num_draws: int, repeats: int = 3) -> dict:
  """Chain-steps/s of the sweep's sharded program for K checkpoints × C chains on all devices."""
  from jaxdev import distributed, llc  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  task, params, data = _regression_sampling(config, max(8 * batch_size, 8192))
  settings = llc.SweepSettings(step_size=3e-4, nbeta=66.67, gamma=6.67, num_chains=num_chains,
                               num_draws=num_draws, batch_size=batch_size,
                               num_init_loss_batches=1).resolved()
  mesh = distributed.sweep_mesh(num_chains)
  group = -(-num_checkpoints // mesh.shape["ckpt"]) * mesh.shape["ckpt"]
  stacked = jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * group), params)
  stacked = jax.tree_util.tree_map(lambda x: llc._global_array(x, mesh, P("ckpt")), stacked)  # pylint: disable=protected-access
  keys = llc._global_array(np.asarray(jax.random.split(jax.random.PRNGKey(1), num_chains)), mesh, P("chain"))  # pylint: disable=protected-access
  host_data = data
  data = jax.tree_util.tree_map(lambda x: llc._global_array(x, mesh, P()), data)  # pylint: disable=protected-access
  estimate = llc.build_estimator(task.loss_fn, settings, mesh)
  jax.block_until_ready(estimate(stacked, keys, data))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(estimate(stacked, keys, data))
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  chain_steps = group * num_chains * num_draws
  flops = chain_steps * gradient_flops(task, params, host_data, batch_size)
  return {"benchmark": "sweep", "num_checkpoints": group, "num_chains": num_chains,
          "num_draws": num_draws, "batch_size": batch_size, "mesh": dict(mesh.shape),
          "chain_steps_per_s": chain_steps / seconds,
          "ms_per_step_all_chains": 1e3 * seconds / num_draws,
          "gflops_per_s": flops / seconds / 1e9, **machine()}
