"""LLC over a whole training run: checkpoints × chains as one sharded computation.

``sweep(run_dir, settings)`` reads a run's orbax checkpoints, stacks them in groups on a leading
axis and estimates the LLC of every checkpoint with :func:`jaxdev.sgld.run_chains`, mapped over
checkpoints and chains and laid out on a ("ckpt", "chain") device mesh with ``shard_map``: each
device samples its own block of checkpoints × chains. Every checkpoint uses the same chain keys,
hence the same minibatches and noise (SPEC §3), which keeps the LLC curve smooth.

Results go to ``run_dir/llc/NAME/`` as they finish, one ``step_XXXXXXXX.npz`` per checkpoint
(written atomically by process 0), next to ``settings.json``. A restarted sweep does only the
missing checkpoints; because a checkpoint's numbers depend only on its parameters and the key,
the result is the same as an uninterrupted sweep.
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


class SweepError(RuntimeError):
  """A sweep cannot start as asked (clear, one-line message)."""


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """SGLD settings of one sweep; all are recorded in settings.json.

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


def result_path(out_dir: str, step: int) -> str:
  return os.path.join(out_dir, f"step_{int(step):08d}.npz")


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  """The training config saved in ``run_dir/config.json``."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.isdir(run_dir):
    raise SweepError(f"run directory {run_dir} does not exist")
  if not os.path.exists(path):
    raise SweepError(f"{run_dir} is not a run directory (no config.json)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _settings_conflict(out_dir: str, settings: SweepSettings, name: str) -> str | None:
  """Why the recorded settings of this sweep differ from ``settings`` (None if they match)."""
  path = os.path.join(out_dir, "settings.json")
  record = json.loads(json.dumps(dataclasses.asdict(settings)))
  if not os.path.exists(path):
    return None
  with open(path) as f:
    existing = json.load(f)
  if existing == record:
    return None
  changed = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
  return (f"sweep {name!r} in {os.path.dirname(out_dir)} was started with other SGLD settings "
          f"({', '.join(changed)} differ); pass a new sweep name to start another sweep")


def _plan(out_dir: str, settings: SweepSettings, name: str, wanted: list) -> list:
  """Steps of ``wanted`` still to do, decided by process 0 and shared with every process.

  Process 0 checks the recorded settings (writing them for a new sweep) and lists the results
  already on disk; other hosts may not see that directory, so they take its answer.
  """
  conflict = None
  done = np.zeros(len(wanted), np.int32)
  if distributed.is_main_process():
    os.makedirs(out_dir, exist_ok=True)
    conflict = _settings_conflict(out_dir, settings, name)
    if conflict is None and not os.path.exists(os.path.join(out_dir, "settings.json")):
      rundir.atomic_write_text(os.path.join(out_dir, "settings.json"),
                               json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True) + "\n")
    done = np.array([os.path.exists(result_path(out_dir, s)) for s in wanted], np.int32)
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


def _global_array(host_array, mesh, spec):
  """A global jax.Array from a host array that every process holds identically."""
  return distributed.global_array(host_array, NamedSharding(mesh, spec))


def _gather(tree):
  """Host numpy copies of (possibly multi-host) global arrays."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
  return jax.tree_util.tree_map(
      lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def sweep(run_dir: str, settings: SweepSettings, *, steps: Sequence[int] | None = None,
          checkpoints_per_batch: int = 8, mesh=None, name: str = "default",
          show_progress: bool = True) -> SweepResult:
  """Estimates the LLC at every checkpoint of the run in ``run_dir``.

  Args:
    run_dir: a run directory written by :func:`jaxdev.train.train`.
    settings: SGLD settings (see :class:`SweepSettings`).
    steps: checkpoint steps to estimate (default: all of them).
    checkpoints_per_batch: checkpoints sampled together in one call (rounded up to a multiple
      of the mesh's "ckpt" axis; the last group is padded by repeating a checkpoint).
    mesh: a ("ckpt", "chain") mesh; default :func:`jaxdev.distributed.sweep_mesh` over all devices.
    name: the sweep's name; results go to ``run_dir/llc/NAME``.
    show_progress: draw a tqdm bar (process 0 only).

  Returns:
    A SweepResult. Checkpoints that cannot be read are reported in ``failed`` and skipped.

  Raises:
    SweepError: no such run, no checkpoints, or settings that differ from the sweep's record.
  """
  settings = settings.resolved()
  config = load_run_config(run_dir)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  available = checkpoints.list_steps(ckpt_dir)
  if not available:
    raise SweepError(f"{run_dir} holds no checkpoints")
  wanted = available if steps is None else sorted(set(int(s) for s in steps))
  out_dir = os.path.join(run_dir, "llc", name)
  todo = _plan(out_dir, settings, name, wanted)
  done_already = [s for s in wanted if s not in set(todo)]
  failed = {s: "no checkpoint at this step" for s in todo if s not in set(available)}
  todo = [s for s in todo if s not in failed]

  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh
  ckpt_axis = mesh.shape["ckpt"]
  group_size = max(checkpoints_per_batch, 1)
  group_size = -(-group_size // ckpt_axis) * ckpt_axis

  task = tasks_lib.make_task(config)
  abstract = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  start = time.time()
  chain_steps = 0
  result = SweepResult(out_dir, [], done_already, failed, 0.0, 0.0)
  if not todo:
    return result

  data = task.sampling_data(settings.sampling_seed, settings.num_sampling_examples)
  data = jax.tree_util.tree_map(lambda x: _global_array(x, mesh, P()), data)
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(settings.seed), settings.num_chains))
  keys = _global_array(keys, mesh, P("chain"))
  estimate = build_estimator(task.loss_fn, settings, mesh)

  is_main = distributed.is_main_process()
  bar = tqdm(total=len(todo), disable=not (show_progress and is_main), desc=f"llc[{name}]",
             unit="ckpt", dynamic_ncols=True)
  with checkpoints.ParamsReader(ckpt_dir, abstract) as reader:
    queue = list(todo)
    while queue:
      group, params = [], []
      while queue and len(group) < group_size:
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
      padded = params + [params[-1]] * (group_size - len(params))
      stacked = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *padded)
      stacked = jax.tree_util.tree_map(lambda x: _global_array(x, mesh, P("ckpt")), stacked)
      init_losses, trace = _gather(estimate(stacked, keys, data))
      for i, step in enumerate(group):
        chain_trace = jax.tree_util.tree_map(lambda x, i=i: x[i], trace)
        summary = sgld.summarize(chain_trace, float(init_losses[i]), nbeta=settings.nbeta,
                                 num_burnin=settings.num_burnin, thin=settings.thin)
        if is_main:
          rundir.atomic_save_npz(result_path(out_dir, step), **result_record(step, summary, chain_trace))
        result.steps_done.append(step)
      chain_steps += len(group) * settings.num_chains * settings.num_draws
      bar.update(len(group))
      bar.set_postfix(chain_steps_per_s=f"{chain_steps / (time.time() - start):.0f}")
  bar.close()
  result.seconds = time.time() - start
  result.chain_steps_per_second = chain_steps / max(result.seconds, 1e-9)
  if is_main and failed:
    rundir.atomic_write_text(os.path.join(out_dir, "failed.json"),
                             json.dumps({str(k): v for k, v in sorted(failed.items())}, indent=2) + "\n")
  return result


def result_record(step: int, summary: "sgld.LLCResult", trace) -> dict:
  """The arrays stored per checkpoint (see the module docstring)."""
  record = dict(
      step=np.int64(step),
      llc_mean=np.float64(summary.llc_mean),
      llc_std=np.float64(summary.llc_std),
      llc_per_chain=np.asarray(summary.llc_per_chain),
      loss_trace=np.asarray(summary.loss_trace),
      init_loss=np.float64(summary.init_loss),
      nbeta=np.float64(summary.nbeta),
      num_failed=np.int64(summary.num_failed),
      failed_chains=np.asarray(summary.failed_chains),
  )
  if hasattr(trace, "distance"):
    record["distance_trace"] = np.asarray(trace.distance)
  return record


def load_results(out_dir: str) -> dict:
  """Stacked per-checkpoint results of a sweep directory, sorted by step."""
  files = sorted(f for f in os.listdir(out_dir) if f.startswith("step_") and f.endswith(".npz"))
  if not files:
    return {}
  records = [dict(np.load(os.path.join(out_dir, f))) for f in files]
  keys = ("step", "llc_mean", "llc_std", "init_loss", "num_failed")
  return {k: np.array([r[k] for r in records]) for k in keys}


def format_table(run_dir: str, name: str = "default", max_rows: int = 20) -> str:
  """A short text table of step, LLC ± std and test loss (evenly subsampled to ``max_rows``)."""
  results = load_results(os.path.join(run_dir, "llc", name))
  if not results:
    return "(no LLC results yet)"
  evals = {r["step"]: r["loss"] for r in rundir.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
           if r.get("split") == "eval"}
  n = len(results["step"])
  rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int))
  lines = [f"{'step':>9}  {'LLC':>9}  {'± std':>7}  {'test loss':>9}  failed"]
  for i in rows:
    step = int(results["step"][i])
    loss = evals.get(step)
    loss_text = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
    lines.append(f"{step:>9}  {results['llc_mean'][i]:9.3f}  {results['llc_std'][i]:7.3f}  "
                 f"{loss_text}  {int(results['num_failed'][i])}")
  return "\n".join(lines)


def calibrate_checkpoint(run_dir: str, step: int | None, *, step_sizes, nbetas, gammas,
                         num_chains: int, num_draws: int, batch_size: int,
                         num_sampling_examples: int, sampling_seed: int = 3_000, seed: int = 0):
  """Runs :func:`jaxdev.sgld.calibrate` at one checkpoint of a run (default: the last).

  Returns:
    (step, CalibrationResult).
  """
  config = load_run_config(run_dir)
  ckpt_dir = os.path.join(run_dir, "checkpoints")
  available = checkpoints.list_steps(ckpt_dir)
  if not available:
    raise SweepError(f"{run_dir} holds no checkpoints")
  step = available[-1] if step is None else int(step)
  if step not in available:
    raise SweepError(f"{run_dir} has no checkpoint at step {step} (nearest: "
                     f"{min(available, key=lambda s: abs(s - step))})")
  task = tasks_lib.make_task(config)
  with checkpoints.ParamsReader(ckpt_dir, jax.eval_shape(task.init, jax.random.PRNGKey(0))) as reader:
    params = reader.read(step)
  data = task.sampling_data(sampling_seed, num_sampling_examples)
  return step, sgld.calibrate(task.loss_fn, params, data, jax.random.PRNGKey(seed),
                              step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
                              num_chains=num_chains, num_draws=num_draws, batch_size=batch_size)
