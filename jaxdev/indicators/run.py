"""evaluate_run(workdir): the indicators at every checkpoint of a run, records, summary, panels.

Each set is a client of :func:`jaxdev.engine.map_checkpoints`: checkpoints are read in groups,
stacked on a leading axis and split over a one-axis ("ckpt") device mesh with ``shard_map``; each
device evaluates its block of checkpoints (one after another, so memory is that of one
checkpoint). Each checkpoint's record is written atomically as one ``.npz`` as soon as its group
finishes, so a killed evaluation resumes with the missing checkpoints and ends with the same
records. The Hessian set (``which="all"``) is driven from the host (Lanczos), one checkpoint at a
time, with the same one-record-per-checkpoint rule.

Sets: ``cheap`` — behaviour and structure (forward passes, weight statistics); ``all`` — cheap
plus curvature (Hutchinson trace and top eigenvalues from Hessian-vector products).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxdev import distributed
from jaxdev import engine
from jaxdev import errors
from jaxdev import rundir
from jaxdev import tasks as tasks_lib
from jaxdev.indicators import hessian as hessian_lib
from jaxdev.indicators import regression as regression_lib

SETS = ("cheap", "all")
MAX_SUMMARY_VECTOR = 32  # vectors up to this length get one summary column per entry


class IndicatorError(errors.UserError, ValueError):
  """Indicators cannot be evaluated as asked (clear, one-line message)."""


@dataclasses.dataclass(frozen=True)
class IndicatorSettings:
  """Sizes and seeds of the fixed inputs; recorded in each set's ``settings.json``.

  Attributes:
    num_sequences: regression evaluation sequences per distribution (and per OOD gain).
    num_attention_sequences: regression sequences for the attention statistics.
    num_rows: language evaluation rows (test split) for losses and the bigram score.
    num_baseline_rows: training rows counted for the empirical bigram distribution.
    num_synthetic: sequences per synthetic set (previous-token, prefix matching).
    synthetic_tokens: what the synthetic sets' tokens are drawn from: ``"used"`` (the ids that
      occur in the training rows; an id the corpus never uses has an untrained embedding) or
      ``"all"`` (every id but BOS, the paper's choice on a corpus that uses them all).
    seed: seed of every fixed input set.
    hessian_sequences: examples (sequences or rows) of the fixed Hessian batch.
    num_probes: Hutchinson probes per checkpoint.
    num_eigenvalues: top Hessian eigenvalues per checkpoint.
    hessian_seed: seed of the Hessian batch, the probes and the Lanczos start vector.
  """

  num_sequences: int = 4096
  num_attention_sequences: int = 256
  num_rows: int = 384
  num_baseline_rows: int = 50_000
  num_synthetic: int = 2_000
  synthetic_tokens: str = "used"
  seed: int = 5_000
  hessian_sequences: int = 1024
  num_probes: int = 100
  num_eigenvalues: int = 3
  hessian_seed: int = 3_000


@dataclasses.dataclass
class IndicatorResult:
  """What an evaluation did: steps evaluated now / found done per set, the summary files."""

  done: dict
  skipped: dict
  failed: dict
  summary_csv: str | None = None
  figures: list = dataclasses.field(default_factory=list)
  circuits: dict | None = None  # language runs: jaxdev.analysis.circuits.induction_milestones


# ----------------------------------------------------------------------------- settings → functions


def _language_setting(config, settings: IndicatorSettings):
  # pylint: disable=import-outside-toplevel
  from jaxdev.data import batches as batches_lib, text_rows
  from jaxdev.data import tokenizer as tokenizer_lib
  from jaxdev.indicators import language as language_lib

  builder, train_rows, test_rows = tasks_lib.text_splits(config)
  bigrams = tasks_lib.language_bigrams(train_rows, settings.num_baseline_rows,
                                       config.data.vocab_size)
  tokenizer = text_rows.dataset_tokenizer(builder)
  pool = tasks_lib.block_pool(bigrams, tokenizer.bos_id)
  rows = tasks_lib.with_repeated_blocks(
      config, batches_lib.read_rows(test_rows, range(min(settings.num_rows, len(test_rows)))),
      (4,), pool)
  inputs, constants = language_lib.language_inputs(
      rows, bigrams.counts, tokenizer, tokenizer_lib.gpt2_tokenizer(None),
      context_length=config.model.context_length, num_synthetic=settings.num_synthetic,
      seed=settings.seed, synthetic_tokens=pool if settings.synthetic_tokens == "used" else None)
  model = tasks_lib.model_for(config)
  hessian_rows = batches_lib.read_rows(
      train_rows, range(min(settings.hessian_sequences, len(train_rows))))
  return (lambda params: language_lib.indicators(model.module, params, inputs), constants,
          model.loss_fn, jax.numpy.asarray(hessian_rows), "language")


def _regression_setting(config, settings: IndicatorSettings):
  model, data = tasks_lib.model_for(config), tasks_lib.data_for(config)
  # The run's own draws: its task pool, and its sampling set of the Hessian's seed and size.
  inputs = regression_lib.regression_inputs(
      data.distribution, num_sequences=settings.num_sequences,
      num_attention_sequences=settings.num_attention_sequences, seed=settings.seed)
  batch = data.sampling_data(settings.hessian_seed, settings.hessian_sequences)
  return (lambda params: regression_lib.indicators(model.module, params, inputs), {},
          regression_lib.loss_fn(model.module), batch, "regression")


def setting(config, settings: IndicatorSettings):
  """(cheap: params -> dict, constants, loss_fn, hessian batch, task name) for a run config."""
  if config.task == "regression":
    return _regression_setting(config, settings)
  if config.task == "language":
    return _language_setting(config, settings)
  raise IndicatorError(f"no indicators for task {config.task!r}")


def build_evaluator(fn, mesh):
  """A jitted (stacked params [G, ...]) -> stacked records, G split over the mesh's "ckpt" axis;
  each device maps ``fn`` over its checkpoints one at a time."""
  mapped = jax.shard_map(lambda params: jax.lax.map(fn, params), mesh=mesh, in_specs=P("ckpt"),
                         out_specs=P("ckpt"), check_vma=False)
  return jax.jit(mapped)


# ----------------------------------------------------------------------------- evaluation


def evaluate_run(workdir: str, *, which: str = "cheap", steps: Sequence[int] | None = None,
                 settings: IndicatorSettings | None = None, checkpoints_per_batch: int = 8,
                 mesh=None, plot: bool = True, verbose: bool = False) -> IndicatorResult:
  """Evaluates the indicators at every checkpoint of a run; writes records, summary and panels.

  Writes ``indicators/{cheap,hessian}/step_XXXXXXXX.npz`` (one per checkpoint, atomically),
  ``indicators/{cheap,hessian}/settings.json``, ``indicators/summary.csv`` (one row per step,
  one column per scalar; vectors of ≤ 32 entries as ``name_1 ...``), ``indicators/summary.json``
  (the same columns plus constants such as the bigram entropy) and, with ``plot``,
  ``figures/indicators.png``, stages shaded from ``stages.json`` when present.

  Args:
    workdir: a run directory written by training.
    which: "cheap" or "all" (cheap + Hessian).
    steps: checkpoint steps, ints or digit strings (default: all).
    settings: fixed-input sizes and seeds (default :class:`IndicatorSettings`).
    checkpoints_per_batch: checkpoints per compiled call (rounded up to the device count).
    mesh: a one-axis ("ckpt") mesh; default all devices.
    plot: draw the panels.
    verbose: draw progress bars and print the account of the evaluation
      (:func:`format_result`) on process 0.

  Raises:
    IndicatorError: unknown ``which`` or steps that are not whole numbers.
    jaxdev.engine.SettingsConflictError: records written with other settings.
    jaxdev.errors.SweepError: no checkpoints.
    jaxdev.errors.RunDirError: no such run.
  """
  if settings is not None and settings.synthetic_tokens not in ("used", "all"):
    raise IndicatorError(f"synthetic_tokens must be 'used' or 'all', got "
                         f"{settings.synthetic_tokens!r}")
  if which not in SETS:
    raise IndicatorError(f"--which must be one of {', '.join(SETS)}, got {which!r}")
  settings = settings or IndicatorSettings()
  run_dir = rundir.RunDir(workdir)
  run_dir.require_run()
  config = run_dir.config
  try:
    wanted = None if steps is None else [int(s) for s in steps]
  except (TypeError, ValueError):
    raise IndicatorError(f"steps must be whole numbers, got {','.join(map(str, steps))}") from None
  task = config.task
  fields = dataclasses.asdict(settings)
  curvature_fields = ("hessian_sequences", "num_probes", "num_eigenvalues", "hessian_seed")
  set_records = {  # what each set's numbers depend on
      "cheap": {"task": task, **{k: v for k, v in fields.items() if k not in curvature_fields}},
      "hessian": {"task": task, **{k: fields[k] for k in curvature_fields}}}
  sets = ["cheap"] + (["hessian"] if which == "all" else [])
  plans = {name: engine.plan(run_dir, run_dir.indicators(name), settings_record=set_records[name],
                             steps=wanted)
           for name in sets}  # before any work: a conflict is one line, at once
  cheap, constants, loss_fn, batch, task = setting(config, settings)
  result = IndicatorResult({}, {}, {})
  mesh = mesh or Mesh(np.array(jax.devices()), ("ckpt",))
  abstract = jax.eval_shape(tasks_lib.model_for(config).init, jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(settings.hessian_seed)
  builders = {  # the compiled function of a group (cheap) or of one checkpoint (hessian, Lanczos)
      "cheap": lambda: build_evaluator(cheap, mesh),
      "hessian": lambda: lambda params: hessian_lib.curvature_record(hessian_lib.curvature(
          loss_fn, params, batch, key, num_probes=settings.num_probes,
          num_eigenvalues=settings.num_eigenvalues))}
  for name, plan in plans.items():
    done = engine.map_checkpoints(plan, builders[name], abstract_params=abstract, mesh=mesh,
                                  checkpoints_per_batch=checkpoints_per_batch,
                                  host_driven=name == "hessian", desc=f"indicators[{name}]",
                                  show_progress=verbose)
    result.done[name], result.skipped[name] = done.done, done.skipped
    result.failed.update(done.failed)
  if distributed.is_main_process():
    summary = load_summary(workdir)
    result.summary_csv = write_summary(workdir, summary, constants)
    if task == "language" and summary:
      result.circuits = write_circuits(workdir, summary)
    if plot and summary:
      result.figures.append(plot_run(workdir, summary, constants, task))
  if verbose and distributed.is_main_process():
    print(format_result(result))
  return result


# ----------------------------------------------------------------------------- summary and figures


def load_records(records: rundir.RecordDir) -> list[dict]:
  """The records of one set, sorted by step."""
  return [records.read(step) for step in records.steps()]


def summary_columns(record: dict) -> dict:
  """Scalar columns of one record: scalars as they are, short vectors as ``name_1 ...``."""
  out = {}
  for name, value in record.items():
    value = np.asarray(value)
    if value.ndim == 0:
      out[name] = value.item()
    elif value.ndim == 1 and value.size <= MAX_SUMMARY_VECTOR and name != "hessian_trace_samples":
      out.update({f"{name}_{i + 1}": v.item() for i, v in enumerate(value)})
  return out


def load_summary(workdir: str) -> dict:
  """{column: [N] array} over the steps that have a cheap record (Hessian columns NaN where
  missing)."""
  run_dir = rundir.RunDir(workdir)
  rows = {int(r["step"]): summary_columns(r) for r in load_records(run_dir.indicators("cheap"))}
  for r in load_records(run_dir.indicators("hessian")):
    rows.setdefault(int(r["step"]), {"step": int(r["step"])}).update(summary_columns(r))
  if not rows:
    return {}
  steps = sorted(rows)
  names = sorted({n for row in rows.values() for n in row} - {"step"})
  summary = {"step": np.array(steps, np.int64)}
  for n in names:
    summary[n] = np.array([rows[s].get(n, np.nan) for s in steps], np.float64)
  return summary


def write_summary(workdir: str, summary: dict, constants: dict) -> str | None:
  """Writes ``indicators/summary.csv`` and ``summary.json``; returns the CSV path."""
  if not summary:
    return None
  run_dir = rundir.RunDir(workdir)
  names = list(summary)
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(names)
  for i in range(len(summary["step"])):
    writer.writerow([int(summary["step"][i])] + [f"{summary[n][i]:.8g}" for n in names[1:]])
  path = run_dir.indicator_summary_path("csv")
  rundir.atomic_write_text(path, text.getvalue())
  data = {"constants": constants,
          "columns": {n: [None if not np.isfinite(v) else float(v) for v in summary[n]] for n in names}}
  rundir.atomic_write_text(run_dir.indicator_summary_path("json"), json.dumps(data, indent=1) + "\n")
  return path


def write_circuits(workdir: str, summary: dict) -> dict:
  """Previous-token and induction-head formations of a language run
  (:func:`jaxdev.analysis.circuits.induction_milestones`, placed among the run's stages),
  written to ``indicators/circuits.json``; returns them."""
  from jaxdev.analysis import circuits  # pylint: disable=import-outside-toplevel
  found = circuits.induction_milestones(summary, load_stages(workdir))
  path = os.path.join(os.path.dirname(rundir.RunDir(workdir).indicator_summary_path("csv")),
                      "circuits.json")
  rundir.atomic_write_json(path, found)
  return found


def load_stages(workdir: str) -> list:
  """The stages of ``stages.json`` as Stage objects ([] if the run has none yet)."""
  from jaxdev.analysis import stages as stages_lib  # pylint: disable=import-outside-toplevel
  record = rundir.RunDir(workdir).stages() or {}
  fields = {f.name for f in dataclasses.fields(stages_lib.Stage)}
  return [stages_lib.Stage(**{k: v for k, v in s.items() if k in fields})
          for s in record.get("stages", [])]


def plot_run(workdir: str, summary: dict, constants: dict, task: str) -> str:
  """Draws the indicator panels of a run into ``figures/indicators.png``; returns the path."""
  from jaxdev.analysis import indicator_plots  # pylint: disable=import-outside-toplevel
  run_dir = rundir.RunDir(workdir)
  rundir.makedirs(run_dir.figures)
  panels = (indicator_plots.language_panels(summary, constants) if task == "language"
            else indicator_plots.regression_panels(summary))
  fig = indicator_plots.plot_panels(summary["step"], panels, stages=load_stages(workdir),
                                    title=f"Indicators ({os.path.basename(os.path.normpath(workdir))})")
  path = run_dir.figure("indicators.png")
  rundir.atomic_save_figure(fig, path, dpi=100)  # a Figure made without pyplot: nothing to close
  return path


def format_result(result: IndicatorResult) -> str:
  """A short printable account of an evaluation."""
  lines = [f"indicators[{name}]: {len(result.done[name])} checkpoints evaluated, "
           f"{len(result.skipped[name])} already done" for name in result.done]
  lines += [f"warning: step {s}: {why}" for s, why in sorted(result.failed.items())]
  if result.summary_csv:
    lines.append(f"summary: {result.summary_csv}")
  if result.circuits is not None:
    from jaxdev.analysis import circuits  # pylint: disable=import-outside-toplevel
    lines.append(circuits.format_milestones(result.circuits))
  lines += [f"figure: {p}" for p in result.figures]
  return "\n".join(lines)
