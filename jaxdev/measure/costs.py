"""Device-hour estimates for a training run and an LLC sweep, from a short timed warm-up.

Long jobs print these before they start (``scripts/train.py``, ``scripts/llc_sweep.py``;
``--estimate_only`` prints them and stops). Each estimate compiles the job's own program on the
devices it will use, runs it once untimed, then times a few calls and scales up:

* training: seconds per optimizer step (median of the timed steps) × the run's steps;
* sweep: seconds per draw of one checkpoint group × draws × groups, where a group is what
  :func:`jaxdev.llc.sweep` samples in one call
  (:func:`jaxdev.engine.group_size`).

Wall hours exclude compilation and checkpoint I/O; device-hours are wall hours × the number of
devices the job occupies (what accelerator pricing charges for). Sizes and settings come from
the configs; parameters are the freshly initialised ones, which cost the same as any checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdev.measure import timing


@dataclasses.dataclass
class TrainingCall:
  """One compiled call of a run's training program (:func:`jaxdev.train.build_update`).

  Attributes:
    call: runs ``length`` optimizer steps from the current state and returns their losses
      (the state is carried between calls, as in training).
    length: optimizer steps per call.
    mesh: the run's data mesh.
    params: the initial parameters.
    step_flops: XLA's flop count of one optimizer step, on all devices of the mesh together.
  """
  call: Callable[[], jax.Array]
  length: int
  mesh: jax.sharding.Mesh
  params: object
  step_flops: Callable[[], float]


def training_call(task, config, *, num_steps: int, devices=None) -> TrainingCall:
  """The training program of ``config`` for ``task``, as :func:`jaxdev.train.train` builds it.

  ``num_steps`` is rounded down as training chunks its steps (:func:`jaxdev.train.chunk_length`).
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  optimizer = train.make_optimizer(config.optim)
  mesh = train.data_mesh(config.optim.batch_size, devices)
  length = train.chunk_length(0, max(num_steps, 1))
  batches = train.host_batch_array(task, range(length), mesh)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))  # as train.train
  state = list(train.init_state(task, optimizer, init_key, mesh))
  params = state[0]
  update = train.build_update(task, optimizer, data_key, mesh)
  step = jax.device_put(np.int32(0), NamedSharding(mesh, P()))

  def call():
    state[0], state[1], losses, _ = update(state[0], state[1], step, batches, length)
    return losses

  def step_flops():
    one = train.host_batch_array(task, range(1), mesh)
    # XLA counts the partitioned program of one device: its share of the batch.
    return mesh.size * timing.compiled_flops(update.lower(state[0], state[1], step, one,
                                                          1).compile())

  return TrainingCall(call, length, mesh, jax.device_get(params), step_flops)


def sweep_call(task, settings, mesh, *, num_checkpoints: int, num_examples: int,
               params=None, masks=None, restriction_map: str = "map") -> Callable[[], object]:
  """One call of the sweep's sharded program (:func:`jaxdev.llc.build_estimator`) on
  ``num_checkpoints`` copies of ``params`` (default: the task's initialisation at seed 0), with
  the chain keys, sampling data and layout that :func:`jaxdev.llc.sweep` uses; with ``masks``,
  the program of :func:`jaxdev.llc.sweep_restricted` over those restrictions."""
  from jaxdev import engine, llc  # pylint: disable=import-outside-toplevel
  if params is None:
    params = task.init(jax.random.key(0))
  stacked = engine.stack_group([jax.device_get(params)], num_checkpoints, mesh)
  data = llc.sampling_data(task, settings, mesh, num_examples)
  keys = llc.chain_keys(settings, mesh)
  selectors = task.model.mask_selectors if task.model is not None else None
  estimate = llc.build_estimator(task.loss_fn, settings, mesh, selectors, masks=masks,
                                 restriction_map=restriction_map)
  return lambda: estimate(stacked, keys, data)


def _record(job: str, wall_seconds: float, num_devices: int, **fields) -> dict:
  hours = wall_seconds / 3600.0
  return {"job": job, **fields, "num_devices": num_devices, "wall_hours": hours,
          "device_hours": hours * num_devices, "device": jax.devices()[0].device_kind}


def training_estimate(config, *, devices=None, warmup_steps: int = 16,
                      num_steps: int | None = None) -> dict:
  """Estimated cost of ``jaxdev.train.train(config, ...)`` on ``devices`` (default: all).

  Times three calls of the run's own compiled training program, each of ``warmup_steps``
  optimizer steps (rounded down to a power of two of at most ``train.MAX_CHUNK``, as training
  runs them), after one call for compilation.

  Args:
    config: the training config.
    devices: the devices training would use (default: all).
    warmup_steps: optimizer steps per timed call.
    num_steps: the optimizer steps still to run (default: all of ``config.optim.num_steps``;
      fewer for a partial run resuming from a checkpoint, more for several runs of one model).

  Returns:
    A dict with ``seconds_per_step``, ``num_steps`` (the steps still to run), ``wall_hours``,
    ``num_devices`` and ``device_hours``.
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  train.validate_config(config)
  steps = max(config.optim.num_steps if num_steps is None else int(num_steps), 0)
  program = training_call(train.make_task(config), config, devices=devices,
                          num_steps=max(1, min(steps, warmup_steps)))
  seconds = timing.median_seconds(program.call, 3) / program.length
  return _record("train", seconds * steps, program.mesh.size, num_steps=steps,
                 seconds_per_step=seconds, batch_size=config.optim.batch_size)


def sweep_estimate(train_config, settings, *, num_checkpoints, checkpoints_per_batch: int = 8,
                   mesh=None, warmup_draws: int = 4, repeats: int = 1) -> dict:
  """Estimated cost of :func:`jaxdev.llc.sweep` over ``num_checkpoints`` of a run of ``train_config``.

  Args:
    train_config: the run's training config (model and data).
    settings: the sweep's :class:`jaxdev.llc.SweepSettings`.
    num_checkpoints: checkpoints still to estimate: a count, or one count per sweep (a
      restricted sweep is one sweep per restriction), each sweep filling its last group with
      padding that costs as much as a checkpoint.
    checkpoints_per_batch: as in :func:`jaxdev.llc.sweep`.
    mesh: the sweep's mesh (default :func:`jaxdev.distributed.sweep_mesh` over all devices).
    warmup_draws: draws per chain in the timed call (the time scales linearly with draws).
    repeats: timed calls (median).
  """
  from jaxdev import distributed, engine, tasks  # pylint: disable=import-outside-toplevel
  settings = settings.resolved()
  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh
  group_size = engine.group_size(checkpoints_per_batch, mesh)
  counts = [int(n) for n in np.atleast_1d(num_checkpoints)]
  num_groups = sum(-(-n // group_size) for n in counts)
  num_checkpoints = sum(counts)
  draws = min(max(warmup_draws, 1), settings.num_draws)
  short = dataclasses.replace(settings, num_draws=draws, num_burnin=0, num_init_loss_batches=1)

  task = tasks.make_task(train_config, matmul_dtype=settings.matmul_dtype)
  num_examples = min(settings.num_sampling_examples, max(64 * settings.batch_size, 8192))
  call = sweep_call(task, short, mesh, num_checkpoints=group_size, num_examples=num_examples,
                    params=task.init(jax.random.key(train_config.seed)))
  seconds_per_draw = timing.median_seconds(call, repeats) / draws
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
