"""One measurement at every checkpoint of a run: plan it, compute it, keep one record per step.

A per-checkpoint measurement (the LLC sweep, the indicators, the Hessian) is a function of one
checkpoint's parameters whose result is kept as one record per step in a
:class:`jaxdev.rundir.RecordDir`, next to the settings the numbers depend on. This module is
everything around that function, written once; a client supplies the function and how its
output becomes a record::

  plan = engine.plan(run, run.indicators("cheap"), settings_record=settings, steps=steps)
  result = engine.map_checkpoints(plan, lambda: build_evaluator(fn, mesh),
                                  abstract_params=abstract, mesh=mesh)

:func:`plan` decides what to do, on process 0 (the process that reads and writes records; other
hosts may not see the run directory) and hands the decision to every process:

- one writer: process 0 takes the record directory's write lock
  (:class:`jaxdev.rundir.WriteLock`; another process writing it is refused with
  :class:`jaxdev.rundir.LockedError`) and holds it until :func:`map_checkpoints` returns;
- settings: a record directory started with other settings is refused with
  :class:`SettingsConflictError`; a new one gets its ``settings.json`` before any work;
- provenance: every record carries the run's identity and the settings that made it
  (:meth:`jaxdev.rundir.RecordDir.write`); a record made by another run or with other settings
  than asked for is refused the same way, whatever ``settings.json`` says (it is a copy for
  readers, not the truth);
- records present that read back are skipped; records that exist but do not read back are
  reported in ``damaged`` and computed again;
- wanted steps without a checkpoint are reported in ``failed``.

:func:`map_checkpoints` computes the rest. In the grouped mode (default), checkpoints are read in
groups of ``checkpoints_per_batch`` rounded up to a multiple of the mesh's "ckpt" axis
(:func:`group_size`), the last group padded by repeating its last checkpoint, stacked
``[G, ...]`` on a leading axis split over "ckpt" (:func:`stack_group`), passed to the client's
compiled function in one call, and its outputs (leading axis G) gathered to every host
(:func:`gather`). In the host-driven mode, the client's function takes one checkpoint's
parameters at a time (a loop driven from Python, such as Lanczos). Either way process 0 writes
each step's record atomically as soon as its group is done, so a killed computation, run again,
computes only the missing steps; since a record depends only on its checkpoint and the settings,
it ends with the records of an uninterrupted one. A checkpoint that cannot be read (on any
process) is skipped, reported in ``failed`` and listed in the directory's ``failed.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Iterable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import errors
from jaxdev import rundir


class SettingsConflictError(errors.SweepError):
  """A record directory was started with other settings than those asked for."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a per-checkpoint computation will do, as process 0 decided it (the same on every
  process).

  Attributes:
    run: the run whose checkpoints are read.
    records: where the records go.
    todo: steps to compute, ascending: a checkpoint is there and its record is missing or damaged.
    skipped: wanted steps whose record is there and reads back.
    missing: {step: reason} for wanted steps without a checkpoint (reported as failed).
    damaged: {step: message} for records that did not read back (their steps are in ``todo``,
      or in ``missing`` when the checkpoint is gone too).
    pending: None for one record directory; for a plan of several (:func:`combine`), the steps
      each of ``records`` still needs (a frozenset per directory).
    provenance: on process 0, what every record written carries: {"run_id", "settings"} (a
      tuple of them, one per directory, for a combined plan); None elsewhere.
  """

  run: rundir.RunDir
  records: "rundir.RecordDir | tuple"
  todo: list
  skipped: list
  missing: dict
  damaged: dict
  pending: tuple | None = None
  locks: tuple = dataclasses.field(default=(), compare=False, repr=False)
  provenance: "dict | tuple | None" = dataclasses.field(default=None, compare=False, repr=False)

  def release(self) -> None:
    """Releases the record directories' write locks (:func:`map_checkpoints` does it when it
    returns; dropping the plan does it too)."""
    for lock in self.locks:
      lock.release()


@dataclasses.dataclass
class MapResult:
  """What :func:`map_checkpoints` did.

  Attributes:
    out_dir: the record directory (a list of them for a :func:`combine`-d plan).
    done: steps computed (and, on process 0, written) now, in order.
    skipped: steps whose records were already there.
    failed: {step: reason} for checkpoints missing or unreadable.
    damaged: {step: message} for records that did not read back and were computed again.
    seconds: wall time of the computation (after planning).
  """

  out_dir: str
  done: list
  skipped: list
  failed: dict
  damaged: dict
  seconds: float


# ----------------------------------------------------------------------------- planning


def _normalized(record: dict) -> dict:
  """``record`` as it reads back from JSON (tuples as lists, keys as strings)."""
  return json.loads(json.dumps(record))


def _check_settings(records: rundir.RecordDir, record: dict, defaults: dict, what: str,
                    rename_hint: str | None) -> None:
  """Writes ``record`` as the settings of a new record directory; raises SettingsConflictError
  if the directory was started with other settings (keys it lacks read as ``defaults``)."""
  existing = records.settings()
  if existing is None:
    records.write_settings(record)
    return
  existing = {**{k: v for k, v in defaults.items() if k not in existing}, **existing}
  if existing == record:
    return
  changed = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
  advice = f"use those settings (in {records.settings_path})"
  raise SettingsConflictError(
      f"{records.path} was started with other {what} ({', '.join(changed)} differ); "
      f"{advice}{', or ' + rename_hint if rename_hint else ''}")


def _check_provenance(records: rundir.RecordDir, steps: Sequence[int], provenance: dict,
                      defaults: dict, what: str, rename_hint: str | None) -> None:
  """Raises SettingsConflictError if a record among ``steps`` was made by another run or with
  other settings than ``provenance`` (what its own members say, whatever ``settings.json`` says;
  records written without provenance are taken as the settings file describes them)."""
  wanted = rundir.sha256_of(provenance["settings"])
  hint = f"; {rename_hint}" if rename_hint else ""
  for step in steps:
    made = records.provenance(step)
    if made is None:
      continue
    if made["run_id"] != provenance["run_id"]:
      raise SettingsConflictError(
          f"{records.record_path(step)} was made from another run ({made['run_id']}, this run is "
          f"{provenance['run_id']}): the run was made again after these records{hint}")
    if made["settings_sha256"] != wanted:
      recorded = {**{k: v for k, v in defaults.items() if k not in made["settings"]},
                  **made["settings"]}
      if recorded == provenance["settings"]:
        continue
      asked = provenance["settings"]
      changed = sorted(k for k in set(recorded) | set(asked) if recorded.get(k) != asked.get(k))
      raise SettingsConflictError(
          f"{records.record_path(step)} was made with other {what} ({', '.join(changed)} "
          f"differ) than asked for now{hint}")


def _share(failed: bool, lists: list) -> tuple[bool, list]:
  """Process 0's (failed, lists of ints) on every process (as they are with one process)."""
  if jax.process_count() == 1:
    return failed, lists
  header = np.array([int(failed)] + [len(x) for x in lists], np.int64)
  header = np.asarray(multihost_utils.broadcast_one_to_all(header))
  sizes = header[1:].tolist()
  body = (np.concatenate([np.asarray(x, np.int64).reshape(-1) for x in lists])
          if distributed.is_main_process() else np.zeros(sum(sizes), np.int64))
  if body.size:
    body = np.asarray(multihost_utils.broadcast_one_to_all(body))
  parts = np.split(body, np.cumsum(sizes)[:-1]) if lists else []
  return bool(header[0]), [[int(v) for v in part] for part in parts]


def plan(run, records: rundir.RecordDir, *, settings_record: dict,
         steps: Sequence[int] | None = None, settings_defaults: dict | None = None,
         required: Iterable[str] = ("step",), what: str = "settings",
         rename_hint: str | None = None) -> Plan:
  """What to compute at which checkpoints of ``run`` into ``records`` (see the module docstring).

  Every process must call it (it is collective in a multi-process runtime). Process 0 lists the
  checkpoints and the records, checks the recorded settings and writes them for a new directory;
  the others take its answer.

  Args:
    run: a :class:`jaxdev.rundir.RunDir` or its path.
    records: the record directory (e.g. ``run.llc(name)``, ``run.indicators(name)``).
    settings_record: every setting the records depend on, a JSON-serialisable dict.
    steps: checkpoint steps wanted (default: every checkpoint of the run).
    settings_defaults: values of settings added after a directory was started: recorded
      settings without them read them as these.
    required: the members a record must have to count as done (it is damaged otherwise).
    what: what the settings are called in the conflict message (e.g. "SGLD settings").
    rename_hint: how to keep both, added to the conflict message (e.g. "pass a new sweep name").

  Raises:
    SettingsConflictError: ``records`` was started with other settings.
    jaxdev.rundir.LockedError: another process is writing ``records``.
    jaxdev.errors.SweepError: the run holds no checkpoints.
    jaxdev.errors.RunDirError: damaged settings, or a record directory that cannot be made.
    (On processes other than 0, a SweepError that points to process 0's error.)
  """
  run = run if isinstance(run, rundir.RunDir) else rundir.RunDir(run)
  wanted = None if steps is None else sorted({int(s) for s in steps})
  error, lists, damaged, lock, provenance = None, [[], [], [], []], {}, None, None
  if distributed.is_main_process():
    try:
      available = checkpoints.list_steps(run.checkpoints)
      if not available:
        raise errors.SweepError(f"{run.path} holds no checkpoints")
      lock = records.write_lock(f"records {os.path.basename(records.path)!r}").acquire()
      wanted = available if wanted is None else wanted
      defaults = _normalized(settings_defaults or {})
      run_id = run.identity()["run_id"] if run.is_run else ""  # "": checkpoints without a run
      provenance = {"run_id": run_id, "settings": _normalized(settings_record)}
      damaged = records.damaged(wanted, tuple(required))
      skipped = [s for s in wanted if records.has(s) and s not in damaged]
      new = records.settings() is None
      if not new:  # the settings file first: it names the settings to use
        _check_settings(records, provenance["settings"], defaults, what, rename_hint)
      _check_provenance(records, skipped, provenance, defaults, what, rename_hint)
      if new:
        _check_settings(records, provenance["settings"], defaults, what, rename_hint)
      todo = [s for s in wanted if s not in set(skipped)]
      present = set(available)
      lists = [[s for s in todo if s in present], skipped, [s for s in todo if s not in present],
               sorted(damaged)]
    except Exception as err:  # pylint: disable=broad-except  (re-raised below, after sharing)
      error = err
  failed, (todo, skipped, missing, damaged_steps) = _share(error is not None, lists)
  if error is not None:
    if lock is not None:
      lock.release()
    raise error
  if failed:
    raise errors.SweepError(f"{records.path}: process 0 could not plan the computation (its "
                            "error line says why)")
  damaged = {s: damaged.get(s, f"{records.record_path(s)} is damaged") for s in damaged_steps}
  return Plan(run, records, todo, skipped, {s: "no checkpoint at this step" for s in missing},
              damaged, locks=(lock,) if lock is not None else (), provenance=provenance)


def combine(plans: Sequence[Plan]) -> Plan:
  """One plan for several record directories of one run, computed together: a function whose
  output at a checkpoint holds every directory's record (e.g. R restrictions sampled in one
  program). A step is computed when any directory needs it and written only where needed
  (``to_record`` of :func:`map_checkpoints` then returns one record per directory, in order).
  """
  plans = list(plans)
  if not plans or any(p.run.path != plans[0].run.path for p in plans):
    raise ValueError("combine needs plans of one run")
  todo = sorted(set().union(*(p.todo for p in plans)))
  skipped = sorted(set.intersection(*(set(p.skipped) for p in plans)))
  missing, damaged = {}, {}
  for p in plans:
    missing.update(p.missing)
    damaged.update({s: m for s, m in p.damaged.items() if s not in damaged})
  return Plan(plans[0].run, tuple(p.records for p in plans), todo, skipped, missing, damaged,
              tuple(frozenset(p.todo) for p in plans),
              locks=tuple(lock for p in plans for lock in p.locks),
              provenance=tuple(p.provenance for p in plans))


# ----------------------------------------------------------------------------- layout on devices


def group_size(checkpoints_per_batch: int, mesh: Mesh) -> int:
  """Checkpoints per compiled call: ``checkpoints_per_batch`` (at least 1) rounded up to a
  multiple of the mesh's "ckpt" axis."""
  ckpt_axis = mesh.shape["ckpt"]
  return -(-max(int(checkpoints_per_batch), 1) // ckpt_axis) * ckpt_axis


def stack_group(params: list, size: int, mesh: Mesh):
  """Host parameter pytrees stacked ``[size, ...]`` on a leading axis split over the mesh's
  "ckpt" axis; fewer than ``size`` are padded by repeating the last one."""
  padded = list(params) + [params[-1]] * (size - len(params))
  stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *padded)
  return jax.tree.map(
      lambda x: distributed.global_array(x, NamedSharding(mesh, P("ckpt"))), stacked)


def gather(tree):
  """Host numpy copies of (possibly multi-host) global arrays, whole on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  return jax.tree.map(
      lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def _agree(flags: list) -> list:
  """``flags`` AND-ed over processes (each process passes its own)."""
  if jax.process_count() == 1 or not flags:
    return list(flags)
  every = np.asarray(multihost_utils.process_allgather(np.asarray(flags, np.int32)))
  return [bool(v) for v in every.reshape(-1, len(flags)).all(axis=0)]


def _read_groups(reader, todo: list, size: int, failed: dict, to_host: bool):
  """Yields (steps, params) groups of at most ``size`` readable checkpoints, in order; steps
  that cannot be read on some process go to ``failed`` (the same groups on every process)."""
  queue = list(todo)
  while queue:
    group, params = [], []
    while queue and len(group) < size:
      batch, queue = queue[:size - len(group)], queue[size - len(group):]
      read, reasons = {}, {}
      for step in batch:
        try:
          value = reader.read(step)
          read[step] = jax.device_get(value) if to_host else value
        except errors.CheckpointError as err:
          reasons[step] = str(err)
          if distributed.is_main_process():
            tqdm.write(f"warning: {err}")
      for step, ok in zip(batch, _agree([s in read for s in batch])):
        if ok:
          group.append(step)
          params.append(read[step])
        else:
          failed[step] = reasons.get(step, f"checkpoint at step {step} could not be read by "
                                     "another process")
    if group:
      yield group, params


# ----------------------------------------------------------------------------- the loop


def dict_record(step: int, output: dict) -> dict:
  """The record of a dict output: ``step`` (int64) and every value as an array, floats as
  float64."""
  record = {"step": np.int64(step)}
  for name, value in output.items():
    value = np.asarray(value)
    record[name] = value.astype(np.float64) if value.dtype.kind == "f" else value
  return record


def map_checkpoints(plan: Plan, build: Callable[[], Callable], *, abstract_params,
                    to_record: Callable[[int, object], dict] = dict_record,
                    mesh: Mesh | None = None, checkpoints_per_batch: int = 8,
                    host_driven: bool = False, desc: str = "checkpoints",
                    show_progress: bool = True,
                    rate: tuple[str, float] | None = None) -> MapResult:
  """Computes and writes the records of ``plan.todo`` (see the module docstring).

  Every process must call it with the same plan (the calls are collective).

  Args:
    plan: from :func:`plan`.
    build: returns the function to map; called once, and only when there is something to
      compute, so that a client builds its data and compiles only then. Grouped mode: a function
      of the stacked parameters ``[G, ...]`` (split over the mesh's "ckpt" axis) returning a
      pytree of arrays with leading axis G, e.g. a ``shard_map`` over ``mesh`` under
      ``jax.jit``. Host-driven mode: a function of one checkpoint's parameters returning a
      pytree of arrays.
    abstract_params: the parameters' structure (``jax.eval_shape`` of the model's init).
    to_record: (step, that checkpoint's output as host numpy arrays) -> the record's dict of
      arrays (a list of them, one per directory, for a :func:`combine`-d plan); called on
      process 0 only (default :func:`dict_record`).
    mesh: grouped mode: the mesh the function is laid out on, with a "ckpt" axis (default: a
      one-axis ("ckpt",) mesh of every device).
    checkpoints_per_batch: grouped mode: checkpoints per call, rounded up to a multiple of the
      mesh's "ckpt" axis (:func:`group_size`).
    host_driven: map one checkpoint at a time (no stacking, no mesh).
    desc: the progress bar's label.
    show_progress: draw a tqdm bar on process 0.
    rate: (name, work per checkpoint): the bar also shows ``name`` = work done per second.

  Returns:
    A MapResult. ``failed.json`` in the record directory lists the failed steps, if any.
  """
  try:
    return _map_checkpoints(plan, build, abstract_params=abstract_params, to_record=to_record,
                            mesh=mesh, checkpoints_per_batch=checkpoints_per_batch,
                            host_driven=host_driven, desc=desc, show_progress=show_progress,
                            rate=rate)
  finally:
    plan.release()


def _map_checkpoints(plan: Plan, build, *, abstract_params, to_record, mesh,
                     checkpoints_per_batch, host_driven, desc, show_progress,
                     rate) -> MapResult:
  is_main = distributed.is_main_process()
  records = plan.records
  failed, done = dict(plan.missing), []
  if is_main:
    for message in plan.damaged.values():
      tqdm.write(f"warning: {message}")
  start = time.time()
  if plan.todo:
    fn = build()
    if host_driven:
      size = 1
    else:
      mesh = Mesh(np.array(jax.devices()), ("ckpt",)) if mesh is None else mesh
      size = group_size(checkpoints_per_batch, mesh)
    bar = tqdm(total=len(plan.todo), disable=not (show_progress and is_main), desc=desc,
               unit="ckpt", dynamic_ncols=True)
    with checkpoints.ParamsReader(plan.run.checkpoints, abstract_params) as reader:
      for group, params in _read_groups(reader, plan.todo, size, failed, to_host=not host_driven):
        if host_driven:
          outputs = [jax.tree.map(np.asarray, jax.device_get(fn(params[0])))]
        else:
          stacked = gather(fn(stack_group(params, size, mesh)))
          outputs = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(len(group))]
        for step, output in zip(group, outputs):
          if is_main and plan.pending is None:
            records.write(step, to_record(step, output), plan.provenance)
          elif is_main:
            for where, record, pending, provenance in zip(
                records, to_record(step, output), plan.pending, plan.provenance):
              if step in pending:
                where.write(step, record, provenance)
          done.append(step)
        bar.update(len(group))
        if rate is not None:
          bar.set_postfix({rate[0]: f"{len(done) * rate[1] / (time.time() - start):.0f}"})
    bar.close()
  if is_main and failed:
    for where in (records if plan.pending is not None else (records,)):
      where.write_failed(failed)
  out_dir = records.path if plan.pending is None else [r.path for r in records]
  return MapResult(out_dir, done, list(plan.skipped), failed, dict(plan.damaged),
                   time.time() - start)
