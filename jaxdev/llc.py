"""LLC over a whole training run: checkpoints × chains as one sharded computation.

``sweep(workdir, settings)`` reads a run's orbax checkpoints, stacks them in groups on a leading
axis and estimates the LLC of every checkpoint with :func:`jaxdev.sgld.run_chains`, mapped over
checkpoints and chains and laid out on a ("ckpt", "chain") device mesh with ``shard_map``: each
device samples its own block of checkpoints × chains. Every checkpoint uses the same chain keys,
hence the same minibatches and noise (SPEC §3), which keeps the LLC curve smooth.

Results go to the run's LLC record directory of the sweep's name (``RunDir(workdir).llc(NAME)``,
see :mod:`jaxdev.rundir`) as they finish, one record per checkpoint (written atomically by
process 0), next to the sweep's settings. A restarted sweep does only the missing checkpoints
(and those whose record no longer reads back); because a checkpoint's numbers depend only on
its parameters and the key, the result is the same as an uninterrupted sweep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import rundir
from jaxdev import sgld
from jaxdev import tasks as tasks_lib
from jaxdev.errors import SweepError


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """SGLD settings of one sweep; all are recorded with the sweep's results.

  Attributes:
    step_size: ε.
    gamma: γ, the localization strength.
    nbeta: nβ, the inverse temperature times the dataset size (the product); None resolves to
      m / ln m for the SGLD batch size m.
    num_chains: chains per checkpoint.
    num_draws: SGLD steps per chain (burn-in included).
    batch_size: m, examples per SGLD minibatch.
    num_burnin: leading draws excluded from the estimate.
    thin: keep every ``thin``-th draw after burn-in.
    noise_level: scale of the injected noise (1 = exact SGLD).
    num_sampling_examples: size of the fixed sampling dataset.
    sampling_seed: seed of the sampling dataset.
    num_init_loss_batches: batches of the sampling dataset used for L_n(w*); None = all of it.
    seed: seed of the chain keys (shared by every checkpoint).
    min_good_fraction: a checkpoint is estimated only when **more than** this fraction of its
      chains survive (finite loss throughout); otherwise it is "failed" and its llc_mean is NaN
      (see :func:`chain_status`). The default 0.5 means more than half must survive.
  """

  step_size: float
  gamma: float
  nbeta: float | None
  num_chains: int
  num_draws: int
  batch_size: int
  num_burnin: int = 0
  thin: int = 1
  noise_level: float = 1.0
  num_sampling_examples: int = 2 ** 20
  sampling_seed: int = 3_000
  num_init_loss_batches: int | None = None
  seed: int = 0
  min_good_fraction: float = 0.5

  def resolved(self) -> "SweepSettings":
    """A copy with nβ filled in and sizes checked."""
    for name in ("step_size", "num_chains", "num_draws", "batch_size", "thin",
                 "num_sampling_examples"):
      if not getattr(self, name) > 0:
        raise SweepError(f"sgld.{name} must be positive, got {getattr(self, name)}")
    if self.gamma < 0 or self.num_burnin < 0 or self.noise_level < 0:
      raise SweepError("sgld.gamma, sgld.num_burnin and sgld.noise_level must be >= 0")
    if self.num_burnin >= self.num_draws:
      raise SweepError(f"sgld.num_burnin ({self.num_burnin}) must be below num_draws ({self.num_draws})")
    if not 0 <= self.min_good_fraction < 1:
      raise SweepError(f"sgld.min_good_fraction must be in [0, 1), got {self.min_good_fraction}")
    if self.batch_size > self.num_sampling_examples:
      raise SweepError("sgld.batch_size exceeds the sampling dataset")
    nbeta = sgld.default_nbeta(self.batch_size) if self.nbeta is None else float(self.nbeta)
    if not nbeta > 0:
      raise SweepError(f"sgld.nbeta must be positive, got {nbeta}")
    return dataclasses.replace(self, nbeta=nbeta)

  @classmethod
  def from_config(cls, section) -> "SweepSettings":
    """Settings from a ConfigDict section holding these field names (nbeta 0 or None = default)."""
    values = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}
    if values.get("nbeta") in (0, 0.0):
      values["nbeta"] = None
    if values.get("num_init_loss_batches") in (0,):
      values["num_init_loss_batches"] = None
    return cls(**values)


@dataclasses.dataclass
class SweepResult:
  """What a sweep did. ``failed`` maps checkpoint steps that could not be read to the reason."""

  out_dir: str
  steps_done: list
  steps_skipped: list
  failed: dict
  seconds: float
  chain_steps_per_second: float
  damaged: dict = dataclasses.field(default_factory=dict)


#: The arrays every per-checkpoint record holds (see :func:`result_record`).
RECORD_KEYS = ("step", "llc_mean", "llc_std", "llc_per_chain", "loss_trace", "init_loss", "nbeta",
               "num_failed", "failed_chains")

#: Stored by newer sweeps; a record without them is read as in :func:`record_status`.
STATUS_KEYS = ("num_good", "status", "warnings")

#: A surviving chain is an outlier when its λ̂_c is further from the checkpoint's chain median
#: than OUTLIER_MADS scaled median absolute deviations and than the median's own magnitude.
OUTLIER_MADS = 5.0
MAD_SCALE = 1.4826


def chain_status(llc_per_chain, min_good_fraction: float = 0.5,
                 outlier_mads: float = OUTLIER_MADS) -> tuple[int, str, list]:
  """The verdict on one checkpoint's chains: (number of good chains, status, warnings).

  A chain is good when its λ̂_c is finite (failed chains are NaN). Status:

  - "failed": not more than ``min_good_fraction`` of the C chains are good
    (num_good ≤ min_good_fraction·C); the checkpoint gets no estimate.
  - "outliers": with at least 3 good chains, some good chain has |λ̂_c − m| > outlier_mads ·
    1.4826 · MAD and |λ̂_c − m| > |m|, where m is the median of the good λ̂_c and MAD their
    median absolute deviation from m. The estimate is kept and flagged.
  - "ok": otherwise.

  Args:
    llc_per_chain: [C] per-chain estimates, NaN/Inf for failed chains.
    min_good_fraction: in [0, 1).
    outlier_mads: the outlier threshold in scaled MADs.
  """
  per_chain = np.asarray(llc_per_chain, np.float64).reshape(-1)
  num_chains = per_chain.size
  good = per_chain[np.isfinite(per_chain)]
  num_good = int(good.size)
  if num_good <= min_good_fraction * num_chains:
    return num_good, "failed", [
        f"only {num_good} of {num_chains} chains survived (more than "
        f"{min_good_fraction:g} of them must): no estimate at this checkpoint"]
  if num_good >= 3:
    median = float(np.median(good))
    deviation = np.abs(good - median)
    mad = MAD_SCALE * float(np.median(deviation))
    outliers = good[(deviation > outlier_mads * mad) & (deviation > abs(median))]
    if outliers.size:
      return num_good, "outliers", [
          f"{outliers.size} of {num_good} surviving chains are outliers (λ̂_c "
          f"{', '.join(f'{v:.4g}' for v in outliers)} against a chain median of {median:.4g}); "
          "the estimate is kept but flagged: check step_size"]
  return num_good, "ok", []


def record_status(record: dict) -> tuple[int, str, list]:
  """(num_good, status, warnings) of a stored record; records written before these were stored
  read as num_good = chains − num_failed, status "ok" without failed chains, else by
  :func:`chain_status` with the default fraction."""
  if all(k in record for k in STATUS_KEYS):
    return (int(record["num_good"]), str(record["status"]),
            [str(w) for w in np.asarray(record["warnings"]).reshape(-1)])
  if int(record.get("num_failed", 0)) == 0:
    return int(np.asarray(record.get("llc_per_chain", [])).size), "ok", []
  return chain_status(record["llc_per_chain"])


def result_path(out_dir: str, step: int) -> str:
  """The record file of ``step`` in the sweep directory ``out_dir``."""
  return rundir.RecordDir(out_dir).record_path(step)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config saved in the run ``workdir``, checked (see tasks.check_config).

  Raises:
    RunDirError: no such run, or its config is damaged.
    ConfigError: the saved config cannot make a task.
  """
  config = rundir.RunDir(workdir).config
  tasks_lib.check_config(config)
  return config


def _settings_conflict(records: rundir.RecordDir, settings: SweepSettings, name: str) -> str | None:
  """Why the recorded settings of this sweep differ from ``settings`` (None if they match)."""
  record = json.loads(json.dumps(dataclasses.asdict(settings)))
  existing = records.settings()
  if existing is None:
    return None
  # Settings added later read as their defaults in sweeps recorded before them.
  defaults = {f.name: f.default for f in dataclasses.fields(SweepSettings)
              if f.default is not dataclasses.MISSING}
  existing = {**{k: v for k, v in defaults.items() if k not in existing}, **existing}
  if existing == record:
    return None
  changed = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
  return (f"sweep {name!r} in {os.path.dirname(os.path.dirname(records.path))} was started with "
          f"other SGLD settings ({', '.join(changed)} differ); pass a new sweep name to start "
          "another sweep")


def _plan(records: rundir.RecordDir, settings: SweepSettings, name: str, wanted: list,
          damaged: dict) -> list:
  """Steps of ``wanted`` still to do, decided by process 0 and shared with every process.

  Process 0 checks the recorded settings (writing them for a new sweep) and lists the results
  already on disk that read back; damaged ones are added to ``damaged`` and done again. Other
  hosts may not see that directory, so they take its answer.
  """
  conflict = None
  done = np.zeros(len(wanted), np.int32)
  if distributed.is_main_process():
    conflict = _settings_conflict(records, settings, name)
    if conflict is None and records.settings() is None:
      records.write_settings(dataclasses.asdict(settings))
    if conflict is None:
      damaged.update(records.damaged(wanted, RECORD_KEYS))
    done = np.array([records.has(s) and s not in damaged for s in wanted], np.int32)
  status = np.concatenate([[int(conflict is not None)], done]).astype(np.int32)
  if jax.process_count() > 1:
    status = np.asarray(multihost_utils.broadcast_one_to_all(status))
  if status[0]:
    raise SweepError(conflict or f"sweep {name!r} was started with other SGLD settings")
  return [s for s, d in zip(wanted, status[1:]) if not d]


def build_estimator(loss_fn: Callable, settings: SweepSettings, mesh):
  """A jitted function (stacked params [G, ...], chain keys [C, 2]) -> (init_loss [G], trace).

  Trace arrays have shape [G, C, draws]. Checkpoints are split over the mesh's "ckpt" axis and
  chains over its "chain" axis; the sampling data are replicated.
  """
  kwargs = dict(step_size=settings.step_size, nbeta=settings.nbeta, gamma=settings.gamma,
                num_draws=settings.num_draws, batch_size=settings.batch_size,
                noise_level=settings.noise_level)

  def local(params, chain_keys, data):
    # params: (G_local, ...), chain_keys: (C_local, 2)
    init_losses = jax.vmap(lambda p: sgld.init_loss(
        loss_fn, p, data, batch_size=settings.batch_size,
        num_batches=settings.num_init_loss_batches))(params)  # (G_local,)
    trace = jax.vmap(lambda p: sgld.run_chains(loss_fn, p, data, chain_keys, **kwargs))(params)
    return init_losses, trace  # trace leaves: (G_local, C_local, draws)

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("ckpt"), P("chain"), P()),
                         out_specs=(P("ckpt"), P("ckpt", "chain")), check_vma=False)
  return jax.jit(mapped)


def group_size(checkpoints_per_batch: int, mesh) -> int:
  """Checkpoints the sweep samples in one call: ``checkpoints_per_batch`` (at least 1) rounded
  up to a multiple of the mesh's "ckpt" axis."""
  ckpt_axis = mesh.shape["ckpt"]
  return -(-max(checkpoints_per_batch, 1) // ckpt_axis) * ckpt_axis


def chain_keys(settings: SweepSettings, mesh) -> jax.Array:
  """The chain keys [C, 2] every checkpoint shares, split over the mesh's "chain" axis."""
  keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(settings.seed),
                                                         settings.num_chains)))
  return distributed.global_array(keys, NamedSharding(mesh, P("chain")))


def sampling_data(task, settings: SweepSettings, mesh, num_examples: int | None = None):
  """The task's fixed SGLD dataset (``num_examples``, default the settings' size), replicated."""
  num_examples = settings.num_sampling_examples if num_examples is None else num_examples
  data = task.sampling_data(settings.sampling_seed, num_examples)
  return jax.tree.map(lambda x: distributed.global_array(x, NamedSharding(mesh, P())), data)


def stack_group(params: list, size: int, mesh):
  """Host parameter pytrees stacked [size, ...] on a leading axis split over "ckpt"; fewer
  than ``size`` are padded by repeating the last one."""
  padded = list(params) + [params[-1]] * (size - len(params))
  stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *padded)
  return jax.tree.map(
      lambda x: distributed.global_array(x, NamedSharding(mesh, P("ckpt"))), stacked)


def _gather(tree):
  """Host numpy copies of (possibly multi-host) global arrays."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  return jax.tree.map(
      lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def sweep(workdir: str, settings: SweepSettings, *, steps: Sequence[int] | None = None,
          checkpoints_per_batch: int = 8, mesh=None, name: str = "default",
          show_progress: bool = True) -> SweepResult:
  """Estimates the LLC at every checkpoint of the run in ``workdir``.

  Args:
    workdir: a run directory written by :func:`jaxdev.train.train`.
    settings: SGLD settings (see :class:`SweepSettings`).
    steps: checkpoint steps to estimate (default: all of them).
    checkpoints_per_batch: checkpoints sampled together in one call (rounded up to a multiple
      of the mesh's "ckpt" axis; the last group is padded by repeating a checkpoint).
    mesh: a ("ckpt", "chain") mesh; default :func:`jaxdev.distributed.sweep_mesh` over all devices.
    name: the sweep's name; results go to ``RunDir(workdir).llc(name)``.
    show_progress: draw a tqdm bar (process 0 only).

  Returns:
    A SweepResult. Checkpoints that cannot be read are reported in ``failed`` and skipped;
    records found damaged are reported (with a warning) in ``damaged`` and recomputed.

  Raises:
    SweepError: no checkpoints, or settings that differ from the sweep's record.
    RunDirError: no such run, or a damaged config or settings file.
  """
  settings = settings.resolved()
  run = rundir.RunDir(workdir)
  config = load_run_config(workdir)
  available = checkpoints.list_steps(run.checkpoints)
  if not available:
    raise SweepError(f"{workdir} holds no checkpoints")
  wanted = available if steps is None else sorted(set(int(s) for s in steps))
  records = run.llc(name)
  damaged = {}
  todo = _plan(records, settings, name, wanted, damaged)
  is_main = distributed.is_main_process()
  if is_main:
    for message in damaged.values():
      tqdm.write(f"warning: {message}")
  done_already = [s for s in wanted if s not in set(todo)]
  failed = {s: "no checkpoint at this step" for s in todo if s not in set(available)}
  todo = [s for s in todo if s not in failed]

  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh
  size = group_size(checkpoints_per_batch, mesh)

  task = tasks_lib.make_task(config)
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  start = time.time()
  chain_steps = 0
  result = SweepResult(records.path, [], done_already, failed, 0.0, 0.0, damaged)
  if not todo:
    return result

  data = sampling_data(task, settings, mesh)
  keys = chain_keys(settings, mesh)
  estimate = build_estimator(task.loss_fn, settings, mesh)

  bar = tqdm(total=len(todo), disable=not (show_progress and is_main), desc=f"llc[{name}]",
             unit="ckpt", dynamic_ncols=True)
  with checkpoints.ParamsReader(run.checkpoints, abstract) as reader:
    queue = list(todo)
    while queue:
      group, params = [], []
      while queue and len(group) < size:
        step = queue.pop(0)
        try:
          params.append(jax.device_get(reader.read(step)))
          group.append(step)
        except checkpoints.CheckpointError as err:
          failed[step] = str(err)
          if is_main:
            tqdm.write(f"warning: {err}")
      if not group:
        continue
      stacked = stack_group(params, size, mesh)
      init_losses, trace = _gather(estimate(stacked, keys, data))
      for i, step in enumerate(group):
        chain_trace = jax.tree.map(lambda x, i=i: x[i], trace)
        summary = sgld.summarize(chain_trace, float(init_losses[i]), nbeta=settings.nbeta,
                                 num_burnin=settings.num_burnin, thin=settings.thin)
        if is_main:
          record = result_record(step, summary, chain_trace, settings.min_good_fraction)
          if record["status"] != "ok":
            for message in record["warnings"]:
              tqdm.write(f"warning: step {step}: {message}")
          records.write(step, record)
        result.steps_done.append(step)
      chain_steps += len(group) * settings.num_chains * settings.num_draws
      bar.update(len(group))
      bar.set_postfix(chain_steps_per_s=f"{chain_steps / (time.time() - start):.0f}")
  bar.close()
  result.seconds = time.time() - start
  result.chain_steps_per_second = chain_steps / max(result.seconds, 1e-9)
  if is_main and failed:
    records.write_failed(failed)
  return result


def result_record(step: int, summary: "sgld.LLCResult", trace,
                  min_good_fraction: float = 0.5) -> dict:
  """The arrays stored per checkpoint (see the module docstring).

  Besides the summary's numbers: ``num_good`` (surviving chains), ``status`` ("ok", "failed",
  "outliers", see :func:`chain_status`) and ``warnings`` (a string array: the summary's and the
  status's). A "failed" checkpoint stores llc_mean = llc_std = NaN (not estimated).
  """
  num_good, status, status_warnings = chain_status(summary.llc_per_chain, min_good_fraction)
  failed = status == "failed"
  record = dict(
      step=np.int64(step),
      llc_mean=np.float64(np.nan if failed else summary.llc_mean),
      llc_std=np.float64(np.nan if failed else summary.llc_std),
      llc_per_chain=np.asarray(summary.llc_per_chain),
      loss_trace=np.asarray(summary.loss_trace),
      init_loss=np.float64(summary.init_loss),
      nbeta=np.float64(summary.nbeta),
      num_failed=np.int64(summary.num_failed),
      failed_chains=np.asarray(summary.failed_chains),
      num_good=np.int64(num_good),
      status=np.str_(status),
      warnings=np.array(list(summary.warnings) + status_warnings, dtype=np.str_).reshape(-1),
  )
  if hasattr(trace, "distance"):
    record["distance_trace"] = np.asarray(trace.distance)
  return record


#: What :func:`load_results` needs of a record by default.
RESULT_KEYS = ("step", "llc_mean", "llc_std", "init_loss", "num_failed")


def load_results(out_dir: str, keys: Sequence[str] = RESULT_KEYS,
                 required: Sequence[str] = RECORD_KEYS) -> dict:
  """Stacked per-checkpoint results of a sweep directory, sorted by step ({} if none): ``keys``
  (default step, llc_mean, llc_std, init_loss, num_failed), and num_good, status and warnings (a
  list of lists; see :func:`record_status`). A "failed" checkpoint has llc_mean = llc_std = NaN.

  Args:
    out_dir: the sweep's record directory.
    keys: the arrays to stack.
    required: the members every record must have (it is damaged otherwise); must include
      llc_per_chain and num_failed.

  Raises:
    RunDirError: a record is damaged (the message names it; rerunning the sweep recomputes it).
  """
  records = rundir.RecordDir(out_dir)
  required = tuple(dict.fromkeys(tuple(required) + tuple(keys)))
  read = [records.read(step, required) for step in records.steps()]
  if not read:
    return {}
  results = {k: np.array([r[k] for r in read]) for k in keys}
  verdicts = [record_status(r) for r in read]
  results["num_good"] = np.array([v[0] for v in verdicts], np.int64)
  results["status"] = np.array([v[1] for v in verdicts], dtype=np.str_)
  results["warnings"] = [v[2] for v in verdicts]
  failed = results["status"] == "failed"
  results["llc_mean"] = np.where(failed, np.nan, results["llc_mean"])  # records before statuses
  results["llc_std"] = np.where(failed, np.nan, results["llc_std"])
  return results


def format_table(workdir: str, name: str = "default", max_rows: int = 20) -> str:
  """A short text table of step, LLC ± std and test loss (evenly subsampled to ``max_rows``)."""
  run = rundir.RunDir(workdir)
  results = load_results(run.llc(name).path)
  if not results:
    return "(no LLC results yet)"
  evals = {r["step"]: r["loss"] for r in run.metrics("eval")}
  n = len(results["step"])
  rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int))
  lines = [f"{'step':>9}  {'LLC':>9}  {'± std':>7}  {'test loss':>9}  failed  status"]
  for i in rows:
    step = int(results["step"][i])
    loss = evals.get(step)
    loss_text = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
    lines.append(f"{step:>9}  {results['llc_mean'][i]:9.3f}  {results['llc_std'][i]:7.3f}  "
                 f"{loss_text}  {int(results['num_failed'][i]):>6}  {results['status'][i]}")
  bad = [(int(s), str(t)) for s, t in zip(results["step"], results["status"]) if t != "ok"]
  if bad:
    lines.append("not ok: " + ", ".join(f"step {s} {t}" for s, t in bad))
  return "\n".join(lines)


def calibrate_checkpoint(workdir: str, step: int | None, *, step_sizes, nbetas, gammas,
                         num_chains: int, num_draws: int, batch_size: int,
                         num_sampling_examples: int, sampling_seed: int = 3_000, seed: int = 0):
  """Runs :func:`jaxdev.sgld.calibrate` at one checkpoint of a run (default: the last).

  Returns:
    (step, CalibrationResult).
  """
  config = load_run_config(workdir)
  ckpt_dir = rundir.RunDir(workdir).checkpoints
  available = checkpoints.list_steps(ckpt_dir)
  if not available:
    raise SweepError(f"{workdir} holds no checkpoints")
  step = available[-1] if step is None else int(step)
  if step not in available:
    raise SweepError(f"{workdir} has no checkpoint at step {step} (nearest: "
                     f"{min(available, key=lambda s: abs(s - step))})")
  task = tasks_lib.make_task(config)
  with checkpoints.ParamsReader(ckpt_dir, jax.eval_shape(task.init, jax.random.key(0))) as reader:
    params = reader.read(step)
  data = task.sampling_data(sampling_seed, num_sampling_examples)
  return step, sgld.calibrate(task.loss_fn, params, data, jax.random.key(seed),
                              step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
                              num_chains=num_chains, num_draws=num_draws, batch_size=batch_size)
