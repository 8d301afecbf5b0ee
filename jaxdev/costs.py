"""Device-hour estimates for a training run and an LLC sweep, from a short timed warm-up.

Long jobs print these before they start (``scripts/train.py``, ``scripts/llc_sweep.py``;
``--estimate_only`` prints them and stops). Each estimate compiles the job's own program on the
devices it will use, runs it once untimed, then times a few calls and scales up:

* training: seconds per optimizer step (median of the timed steps) × the run's steps;
* sweep: seconds per draw of one checkpoint group × draws × groups, where a group is what
  :func:`jaxdev.llc.sweep` samples in one call (``checkpoints_per_batch`` rounded up to the
  mesh's "ckpt" axis).

Wall hours exclude compilation and checkpoint I/O; device-hours are wall hours × the number of
devices the job occupies (what accelerator pricing charges for). Sizes and settings come from
the configs; parameters are the freshly initialised ones, which cost the same as any checkpoint.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from jax.sharding import PartitionSpec as P


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _record(job: str, wall_seconds: float, num_devices: int, **fields) -> dict:
  hours = wall_seconds / 3600.0
  return {"job": job, **fields, "num_devices": num_devices, "wall_hours": hours,
          "device_hours": hours * num_devices, "device": jax.devices()[0].device_kind}


def training_estimate(config, *, devices=None, warmup_steps: int = 16) -> dict:
  """Estimated cost of ``jaxdev.train.train(config, ...)`` on ``devices`` (default: all).

  Times three calls of the run's own compiled training program, each of ``warmup_steps``
  optimizer steps (rounded down to a power of two of at most ``train.MAX_CHUNK``, as training
  runs them), after one call for compilation.

  Returns:
    A dict with ``seconds_per_step``, ``num_steps``, ``wall_hours``, ``num_devices`` and
    ``device_hours``.
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  train.validate_config(config)
  task = train.make_task(config)
  optimizer = train.make_optimizer(config.optim)
  mesh = train.data_mesh(config.optim.batch_size, devices)
  steps = config.optim.num_steps
  length = train.chunk_length(0, max(min(steps, warmup_steps), 1))  # one compiled call's steps
  batches = train.host_batch_array(task, range(length), mesh)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
  state = list(train.init_state(task, optimizer, init_key, mesh))
  update = train.build_update(task, optimizer, data_key, mesh)
  step = jax.device_put(np.int32(0), jax.sharding.NamedSharding(mesh, P()))

  def one_call():
    state[0], state[1], losses, _ = update(state[0], state[1], step, batches, length)
    return losses

  jax.block_until_ready(one_call())  # compile
  seconds = _median_seconds(one_call, 3) / length
  return _record("train", seconds * steps, mesh.size, num_steps=steps, seconds_per_step=seconds,
                 batch_size=config.optim.batch_size)


def sweep_estimate(train_config, settings, *, num_checkpoints: int, checkpoints_per_batch: int = 8,
                   mesh=None, warmup_draws: int = 4, repeats: int = 1) -> dict:
  """Estimated cost of :func:`jaxdev.llc.sweep` over ``num_checkpoints`` of a run of ``train_config``.

  Args:
    train_config: the run's training config (model and data).
    settings: the sweep's :class:`jaxdev.llc.SweepSettings`.
    num_checkpoints: checkpoints still to estimate.
    checkpoints_per_batch: as in :func:`jaxdev.llc.sweep`.
    mesh: the sweep's mesh (default :func:`jaxdev.distributed.sweep_mesh` over all devices).
    warmup_draws: draws per chain in the timed call (the time scales linearly with draws).
    repeats: timed calls (median).
  """
  # pylint: disable=import-outside-toplevel,protected-access
  from jaxdev import distributed, llc, tasks
  settings = settings.resolved()
  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh
  ckpt_axis = mesh.shape["ckpt"]
  group_size = -(-max(checkpoints_per_batch, 1) // ckpt_axis) * ckpt_axis
  num_groups = -(-num_checkpoints // group_size)
  draws = min(max(warmup_draws, 1), settings.num_draws)
  short = dataclasses.replace(settings, num_draws=draws, num_burnin=0, num_init_loss_batches=1)

  task = tasks.make_task(train_config)
  params = jax.device_get(task.init(jax.random.PRNGKey(train_config.seed)))
  stacked = jax.tree_util.tree_map(lambda x: np.stack([x] * group_size), params)
  stacked = jax.tree_util.tree_map(lambda x: llc._global_array(x, mesh, P("ckpt")), stacked)
  num_examples = min(settings.num_sampling_examples, max(64 * settings.batch_size, 8192))
  data = task.sampling_data(settings.sampling_seed, num_examples)
  data = jax.tree_util.tree_map(lambda x: llc._global_array(x, mesh, P()), data)
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(settings.seed), settings.num_chains))
  keys = llc._global_array(keys, mesh, P("chain"))
  estimate = llc.build_estimator(task.loss_fn, short, mesh)

  jax.block_until_ready(estimate(stacked, keys, data))  # compile
  seconds_per_draw = _median_seconds(lambda: estimate(stacked, keys, data), repeats) / draws
  wall = seconds_per_draw * settings.num_draws * num_groups
  return _record("sweep", wall, mesh.size, num_checkpoints=num_checkpoints,
                 num_groups=num_groups, group_size=group_size, num_chains=settings.num_chains,
                 num_draws=settings.num_draws, batch_size=settings.batch_size,
                 seconds_per_group_draw=seconds_per_draw)


def format_estimate(record: dict) -> str:
  """One line: 'estimate (train): 2.31 h wall on 4 × TPU v4 = 9.24 device-hours (...)'."""
  if record["job"] == "train":
    detail = f"{record['num_steps']} steps at {1e3 * record['seconds_per_step']:.2f} ms/step"
  else:
    detail = (f"{record['num_checkpoints']} checkpoints in {record['num_groups']} groups of "
              f"{record['group_size']}, {record['num_chains']} chains × {record['num_draws']} draws")
  return (f"estimate ({record['job']}): {record['wall_hours']:.3g} h wall on "
          f"{record['num_devices']} × {record['device']} = {record['device_hours']:.3g} "
          f"device-hours ({detail}; from a timed warm-up, compilation and I/O excluded)")
