"""Training with orbax checkpoints, an essential-dynamics probe and exact resumption.

``train(config, workdir)`` is what scripts, tests and notebooks call. Randomness for step s is
``fold_in(data_key, s)``, so the batches depend only on the step number: a run killed at any
moment and started again continues from its latest complete checkpoint and ends bitwise equal to
an uninterrupted run (on the same machine and software).

Data parallelism: the global batch (``config.optim.batch_size`` sequences) is split over a
one-axis ("data") mesh of the devices handed in (default: every device of every host); the
parameters and optimizer state are replicated. Batches are drawn inside the jitted step with
partitionable threefry, so every device draws its own rows and the batch is the same whatever
the device count: one host and a multi-host slice train the same model up to float reduction
order. Only process 0 writes metrics, the ED probe and the ``done`` marker; every process takes
part in checkpoint saves (orbax), so a multi-host workdir must be storage every host sees.

Steps run in chunks of up to ``MAX_CHUNK`` per compiled call (a ``lax.scan``); a chunk never
crosses a checkpoint or probe step, and chunks depend only on absolute step numbers, so resumed
and straight runs make the same calls.

Step convention: the checkpoint, evaluation and probe "at step s" are of the parameters after s
optimizer updates (step 0 = initialisation). The training-loss record at step s is the loss of
the batch of update s+1, computed on the step-s parameters before the update.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import errors
from jaxdev import rundir
from jaxdev import tasks as tasks_lib
from jaxdev.errors import ConfigError


def checkpoint_steps(num_steps: int, num_log: int = 100, num_linear: int = 100) -> np.ndarray:
  """Checkpoint steps: the union of log- and linear-spaced steps, rounded and de-duplicated.

  ``num_log`` steps log-spaced over [1, num_steps] and ``num_linear`` linear-spaced over
  [0, num_steps]. For the paper's run (500,000 steps, 100 + 100) this gives 190 steps.

  Returns:
    Sorted int64 array of distinct steps in [0, num_steps].
  """
  log_steps = np.logspace(0, np.log10(num_steps), num_log) if num_log > 0 else np.zeros(0)
  linear_steps = np.linspace(0, num_steps, num_linear) if num_linear > 0 else np.zeros(0)
  steps = np.round(np.concatenate([log_steps, linear_steps])).astype(np.int64)
  return np.unique(np.clip(steps, 0, num_steps))


def scheduled_checkpoints(config) -> list[int]:
  """The checkpoint steps a training config schedules (:func:`checkpoint_steps` of its
  ``optim.num_steps`` and ``checkpoint`` section), as sorted Python ints."""
  return [int(s) for s in checkpoint_steps(config.optim.num_steps, config.checkpoint.num_log,
                                           config.checkpoint.num_linear)]


def learning_rate_schedule(optim_config) -> optax.Schedule:
  """Linear one-cycle schedule (PyTorch OneCycleLR, two phases, anneal 'linear').

  Rises from peak/div_factor at step 0 to the peak at step ``warmup_fraction·num_steps - 1``,
  then falls linearly to peak/(div_factor·final_div_factor) at step ``num_steps - 1``.
  """
  peak = optim_config.peak_lr
  initial = peak / optim_config.div_factor
  final = initial / optim_config.final_div_factor
  total = optim_config.num_steps
  warm_end = max(float(optim_config.warmup_fraction * total) - 1.0, 1.0)
  end = max(float(total - 1), warm_end + 1.0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    # Written as weighted averages so that the end points are exact in float32.
    rise = jnp.clip(step / warm_end, 0.0, 1.0)
    fall = jnp.clip((step - warm_end) / (end - warm_end), 0.0, 1.0)
    up = (1.0 - rise) * initial + rise * peak
    down = (1.0 - fall) * peak + fall * final
    return jnp.where(step <= warm_end, up, down)

  return schedule


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) with the one-cycle schedule."""
  schedule = learning_rate_schedule(optim_config)
  if optim_config.weight_decay > 0:
    return optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                       weight_decay=optim_config.weight_decay)
  return optax.adam(schedule, b1=optim_config.b1, b2=optim_config.b2)


#: The most ED probe rows a run may ask for (the paper's runs take 501 and 5,001; each row is a
#: model output on the probe set, kept on disk and analysed whole).
MAX_PROBES = 1_000_000


def validate_config(config) -> None:
  """Raises ConfigError on sizes or rates that cannot make a run.

  Checks the training sections (optim, eval, ed, log_every) here and the task, data and model
  sections with :func:`jaxdev.tasks.check_config`.
  """
  tasks_lib.check_config(config, complete=True)
  errors.require_positive("optim", config.optim, ("batch_size", "num_steps", "peak_lr",
                                                  "div_factor", "final_div_factor"))
  errors.require_positive("eval", config.eval, ("num_sequences",))
  errors.require_positive("ed", config.ed, ("every", "num_sequences"))
  if not config.log_every > 0:
    raise ConfigError(f"config.log_every must be positive, got {config.log_every}")
  probes = config.optim.num_steps // config.ed.every + 1
  if probes > MAX_PROBES:
    raise ConfigError(f"config.optim.num_steps {config.optim.num_steps} with config.ed.every "
                      f"{config.ed.every} makes {probes:,} ED probes (at most {MAX_PROBES:,}): "
                      "raise config.ed.every")
  if not 0 < config.optim.warmup_fraction <= 1:
    raise ConfigError(f"config.optim.warmup_fraction must be in (0, 1], got {config.optim.warmup_fraction}")
  for name, low, high in (("b1", 0.0, 1.0), ("b2", 0.0, 1.0), ("weight_decay", 0.0, math.inf)):
    value = config.optim.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        low <= value < high):
      raise ConfigError(f"config.optim.{name} must be a number in [{low:g}, {high:g}), got "
                        f"{value!r}")


make_task = tasks_lib.make_task


@dataclasses.dataclass
class TrainResult:
  """What ``train`` did: status is "finished" or "already finished"."""

  status: str
  workdir: str
  final_step: int
  final_eval: dict | None = None


def _to_python(metrics) -> dict:
  out = {}
  for name, value in metrics.items():
    value = np.asarray(value)
    out[name] = value.tolist() if value.ndim else float(value)
  return out


def record_step(step: int, params, *, evaluate, probe, metrics, probe_store,
                evaluated: bool = True) -> dict | None:
  """Computes and writes what a run keeps of its parameters at ``step`` besides the checkpoint:
  :func:`write_step` of ``probe(params)`` (when ``probe_store`` wants the step) and, when
  ``evaluated``, of ``evaluate(params)``.

  Returns:
    The evaluation metrics as Python numbers and lists (None when not ``evaluated``).
  """
  row = jax.device_get(probe(params)) if probe_store.wants(step) else None
  values = jax.device_get(evaluate(params)) if evaluated else None
  return write_step(step, metrics=metrics, probe_store=probe_store, values=values, probe_row=row)


def write_step(step: int, *, metrics, probe_store, values=None, probe_row=None) -> dict | None:
  """Writes a step's ED probe row and evaluation row; training and the checkpoint converter
  (:func:`jaxdev.convert.run.import_run`) both write with it.

  The probe row is written when given and ``probe_store`` wants the step; it counts as written
  only once the caller commits it (:meth:`jaxdev.rundir.ProbeStore.commit`) after the step's
  checkpoint is saved. ``values`` (a dict of arrays) becomes the line
  ``{"step": step, "split": "eval", **values}`` of the metrics writer ``metrics``.

  Returns:
    The evaluation metrics as Python numbers and lists (None without ``values``).
  """
  if probe_row is not None and probe_store.wants(step):
    probe_store.write(step, probe_row)
  if values is None:
    return None
  values = _to_python(values)
  metrics.write({"step": step, "split": "eval", **values})
  return values


def is_complete(workdir: str) -> bool:
  """True when the run in ``workdir`` finished training."""
  return rundir.RunDir(workdir).is_complete


def data_mesh(batch_size: int, devices=None) -> Mesh:
  """The ("data",) mesh training uses: as many of ``devices`` as evenly split the batch.

  Args:
    batch_size: global batch size.
    devices: candidate devices (default: every device of every host).

  Raises:
    ConfigError: in a multi-process runtime, when the batch does not split over all devices
      (every process must take part in every step).
  """
  devices = list(jax.devices() if devices is None else devices)
  size = math.gcd(batch_size, len(devices))
  if size < len(devices) and jax.process_count() > 1:
    raise ConfigError(f"config.optim.batch_size ({batch_size}) must be divisible by the number "
                      f"of devices ({len(devices)}) in a multi-host run")
  return Mesh(np.asarray(devices[:size]), ("data",))


def init_state(task, optimizer, key, mesh):
  """(params, opt_state) initialised from ``key``, replicated over ``mesh``."""
  replicated = NamedSharding(mesh, P())
  params = jax.jit(task.init, out_shardings=replicated)(key)
  return params, jax.jit(optimizer.init, out_shardings=replicated)(params)


MAX_CHUNK = 16  # optimizer steps per compiled call (at most)


def build_update(task, optimizer, data_key, mesh):
  """The jitted training call ``(params, opt_state, step, batches, num_steps) -> (params,
  opt_state, losses [num_steps], step + num_steps)``: ``num_steps`` (static) optimizer steps in
  one ``lax.scan``.

  ``batches`` is None for tasks that draw their batches from a key (step ``s`` uses
  ``task.train_batch(fold_in(data_key, s))``), otherwise the stacked global batches
  ``[num_steps, ...]`` from :func:`host_batch_array`. Batch rows are split over the mesh's
  "data" axis; params, optimizer state, losses and step are replicated. The params and
  optimizer state passed in are donated. Several steps per call matter on CPUs, where XLA runs
  a step inside a loop up to twice as fast as the same step as one call.
  """
  rows = NamedSharding(mesh, P("data"))

  def one_step(carry, batch):
    params, opt_state, step = carry
    if batch is None:
      batch = task.train_batch(jax.random.fold_in(data_key, step))
    batch = jax.lax.with_sharding_constraint(batch, rows)
    loss, grads = jax.value_and_grad(task.loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, step + 1), loss

  def update(params, opt_state, step, batches, num_steps):
    (params, opt_state, step), losses = jax.lax.scan(
        one_step, (params, opt_state, step), batches, length=num_steps)
    return params, opt_state, losses, step

  return jax.jit(update, donate_argnums=(0, 1), static_argnums=(4,),
                 out_shardings=NamedSharding(mesh, P()))


def chunk_length(step: int, next_event: int) -> int:
  """Steps in the next call: the largest power of two <= min(next_event - step, MAX_CHUNK), so
  that a run compiles at most log2(MAX_CHUNK) + 1 programs and every chunk ends by the next
  checkpoint or probe step. Chunks depend only on absolute steps, so a resumed run makes the
  same calls as a straight one."""
  return 1 << (min(next_event - step, MAX_CHUNK).bit_length() - 1)


def host_batch_array(task, steps, mesh):
  """The batches of ``steps`` of a host-batch task, stacked ``[len(steps), ...]`` as a global
  array split over "data" (None for tasks that draw batches from a key).

  Every process reads the whole global batches and keeps the rows of its own devices.
  """
  if task.host_batch is None:
    return None
  sharding = NamedSharding(mesh, P(None, "data"))
  batches = [task.host_batch(step) for step in steps]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
  return jax.tree.map(lambda x: distributed.global_array(x, sharding), stacked)


def require_shared_workdir(workdir: str) -> None:
  """In a multi-process runtime, checks that every process sees the same ``workdir``.

  Checkpoints are written once, collectively, so a resumed multi-host run must find them on
  every host: the workdir has to be storage all hosts share (e.g. a bucket mounted with gcsfuse
  at the same path on every worker). Process 0 writes a token file; every process reads it.

  Raises:
    rundir.RunDirError: on every process, if any process does not see the token.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  token = int(multihost_utils.broadcast_one_to_all(np.int64(time.time_ns() % (1 << 62))))
  path = rundir.RunDir(workdir).shared_check_path
  if jax.process_index() == 0:
    rundir.atomic_write_text(path, str(token))
  multihost_utils.sync_global_devices("jaxdev-shared-workdir-written")
  try:
    with open(path) as f:
      seen = f.read().strip() == str(token)
  except OSError:
    seen = False
  every = multihost_utils.process_allgather(np.int32(seen))
  if not np.all(every):
    raise rundir.RunDirError(
        f"workdir {workdir} is not shared by all {jax.process_count()} processes (hosts "
        f"{np.flatnonzero(every == 0).tolist()} do not see it); a multi-host run needs a path every "
        "host sees, e.g. a gcsfuse-mounted bucket")


def train(config, workdir: str, *, show_progress: bool = True, devices=None) -> TrainResult:
  """Trains the model of ``config`` into ``workdir``, resuming if a partial run is there.

  Args:
    config: a training ConfigDict (see configs/regression.py).
    workdir: the run directory (created if missing).
    show_progress: draw a tqdm progress bar.
    devices: devices to train on, data-parallel (default: every device of every host; the
      largest number of them that divides the batch size is used).

  Returns:
    A TrainResult. A workdir that already holds the finished run is left untouched.

  Raises:
    ConfigError, rundir.RunDirError: bad config or unusable workdir (nothing is written).
  """
  validate_config(config)
  is_main = jax.process_index() == 0
  config_dict = json.loads(config.to_json())
  run = rundir.RunDir(workdir)
  run.prepare(config_dict)
  require_shared_workdir(workdir)
  if run.is_complete:
    return TrainResult("already finished", workdir, run.num_steps_done())
  lock, error = run.write_lock(enabled=is_main), None
  try:
    lock.acquire()
  except rundir.RunDirError as err:
    error = err
  distributed.main_process_raises(error, f"lock {workdir} for training")
  with lock:
    if run.is_complete:  # finished by the process that held the lock before us
      return TrainResult("already finished", workdir, run.num_steps_done())
    return _train(config, run, is_main=is_main, show_progress=show_progress, devices=devices)


def _train(config, run: rundir.RunDir, *, is_main: bool, show_progress: bool,
           devices) -> TrainResult:
  """:func:`train` once the run directory is prepared and locked."""
  workdir = run.path

  task = make_task(config)
  num_steps = config.optim.num_steps
  ckpt_steps = set(scheduled_checkpoints(config))
  probe_steps = range(0, num_steps + 1, config.ed.every)
  optimizer = make_optimizer(config.optim)
  schedule = learning_rate_schedule(config.optim)

  mesh = data_mesh(config.optim.batch_size, devices)
  replicated = NamedSharding(mesh, P())
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  params, opt_state = init_state(task, optimizer, init_key, mesh)

  # Checked before anything is rewritten: a damaged probe file changes nothing. Damaged lines of
  # the metrics are set aside (metrics.jsonl.damaged), not deleted.
  probe_store = run.probe_store(probe_steps, task.probe_shape, enabled=is_main)
  if is_main:
    moved = run.set_aside_damaged_metrics()
    if moved:
      tqdm.write(f"warning: {moved} damaged line(s) of {run.metrics_path} moved to "
                 f"{run.metrics_path}{rundir.DAMAGED_SUFFIX}")
    run.metrics()
  manager = checkpoints.open_manager(run.checkpoints)
  start, restored_params, restored_opt_state, skipped = checkpoints.restore_newest(
      manager, *checkpoints.abstract_like((params, opt_state), replicated),
      damaged_dir=run.damaged_checkpoints)
  for step, reason in skipped:
    if is_main:
      tqdm.write(f"warning: checkpoint at step {step} could not be read, resuming from "
                 f"{'step ' + str(start) if start is not None else 'the start'}: {reason}")
  if start is None:
    start = 0
    if is_main and os.path.exists(run.metrics_path):
      os.unlink(run.metrics_path)  # records of a run killed before its first checkpoint
  else:
    params, opt_state = restored_params, restored_opt_state
    if is_main:
      rundir.truncate_jsonl(run.metrics_path, start)
  if is_main:
    run.write_baselines(task.baselines)
  metrics_writer = run.metrics_writer(enabled=is_main)

  update = build_update(task, optimizer, data_key, mesh)
  evaluate = jax.jit(task.evaluate, out_shardings=replicated)
  probe = jax.jit(task.probe, out_shardings=replicated)
  step_array = jax.device_put(np.int32(start), replicated)

  bar = tqdm(total=num_steps, initial=start, disable=not (show_progress and is_main),
             desc="train", unit="step", dynamic_ncols=True)
  events = sorted(ckpt_steps.union(probe_steps, [num_steps]))
  final_eval, step = None, start
  with checkpoints.finishing(manager), bar:
    while True:
      values = record_step(step, params, evaluate=evaluate, probe=probe, metrics=metrics_writer,
                           probe_store=probe_store, evaluated=step in ckpt_steps)
      if step in ckpt_steps:
        final_eval = values
        if step != start or manager.latest_step() != start:
          checkpoints.save(manager, step, params, opt_state)
        probe_store.commit(step)
      if step == num_steps:
        break
      length = chunk_length(step, events[bisect.bisect_right(events, step)])
      batches = host_batch_array(task, range(step, step + length), mesh)
      params, opt_state, losses, step_array = update(params, opt_state, step_array, batches,
                                                     length)
      logged = [s for s in range(step, step + length) if s % config.log_every == 0]
      if logged:
        losses = np.asarray(jax.device_get(losses))
        for s in logged:
          loss = float(losses[s - step])
          if not np.isfinite(loss):
            raise errors.DivergenceError(
                f"training loss became {loss} at step {s}: the run diverged (try a lower "
                f"optim.peak_lr); its checkpoints up to step {manager.latest_step()} are kept")
          metrics_writer.write({"step": s, "split": "train", "loss": loss,
                                "lr": float(schedule(s))})
        bar.set_postfix(loss=f"{loss:.3f}")
      step += length
      bar.update(length)
  metrics_writer.close()
  probe_store.commit(num_steps)
  if is_main:
    run.mark_done(num_steps)
  return TrainResult("finished", workdir, num_steps, final_eval)
