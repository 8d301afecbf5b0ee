"""A run's published artifacts: the small files that hold its results, and their re-analysis.

``export_run(workdir, out_dir)`` writes, from a finished (or partly swept) run directory:

  llc.csv         step, llc_mean, llc_std (over good chains, ddof 1), llc_se (llc_std / √good),
                  num_good, status, warnings (a JSON list), chain_1 … chain_C
                  (NaN: failed chain)
  metrics.csv     the records of metrics.jsonl (step, split, loss, lr, ... per row)
  indicators.csv  the run's indicator summary (one row per step), when it has one
  ed_scores.csv   step, pc_1 … pc_k: the unsmoothed principal-component scores of the ED probe
                  (k = 16 by default; the forms use the first ``num_components`` of the run's
                  analysis), their explained variance ratios in run.json
  stages.json     stages of the LLC curve, recomputed from llc.csv (when the run has a sweep)
  forms.json      forms of essential dynamics, recomputed from ed_scores.csv with the run's
                  analysis options (σ schedule, window, construction, detector, null paths)
  run.json        the training config, the sweep's settings and the ED options
  figures/        copies of the run's figures
  comparison.md   with a reference run's files: the tables of :mod:`jaxdev.report.compare`,
                  and figures/llc_vs_reference.png, the two LLC curves on one axis

File names, readers and writers: :mod:`jaxdev.report.files`. Floats are written with ``repr``
(shortest round trip), so the CSVs hold the run's float64 values exactly and
:func:`analyze_artifacts` on them reproduces the run's own stages and forms. Everything after the
PCA depends only on the PC scores, which is why k scores suffice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import numpy as np

from jaxdev import errors
from jaxdev import rundir
from jaxdev.analysis import ed
from jaxdev.analysis import run as run_lib
from jaxdev.report import compare
from jaxdev.report import files


def _metrics_columns(records: list) -> dict:
  names = list(dict.fromkeys(n for r in records for n in r))
  return {n: [r.get(n, "") for r in records] for n in names}


def running_llc(record: dict, num_draws: int) -> np.ndarray:
  """Per-chain LLC over the first ``num_draws`` draws of a sweep record: nβ · (mean of the loss
  trace's first draws − L_n(w*)), the estimator of the whole trace cut short (burn-in 0).
  Shape [C]; NaN for failed chains."""
  trace = np.asarray(record["loss_trace"], np.float64)[:, :num_draws]
  with np.errstate(invalid="ignore", over="ignore"):
    values = float(record["nbeta"]) * (trace.mean(axis=1) - float(record["init_loss"]))
  return np.where(np.isfinite(values), values, np.nan)


def _check_csv(run, name: str, draw_points) -> dict:
  records = run.llc(name)
  rows = [records.read(step, ("step", "llc_mean", "llc_std", "loss_trace", "init_loss", "nbeta"))
          for step in records.steps()]
  if not rows:
    raise errors.UserError(f"{records.path} has no LLC results: run that sweep first")
  draws = rows[0]["loss_trace"].shape[1]
  columns = {"step": [int(r["step"]) for r in rows], "num_draws": [draws] * len(rows),
             "llc_mean": [float(r["llc_mean"]) for r in rows],
             "llc_std": [float(r["llc_std"]) for r in rows],
             "num_chains": [int(np.sum(np.isfinite(running_llc(r, draws)))) for r in rows]}
  for k in [k for k in draw_points if k < draws]:
    per_chain = [running_llc(r, k) for r in rows]
    columns[f"llc_mean_first_{k}"] = [float(np.nanmean(c)) for c in per_chain]
    columns[f"llc_std_first_{k}"] = [float(np.nanstd(c, ddof=1)) for c in per_chain]
  if all("observable_llc" in r for r in rows) and (records.settings() or {}).get(
      "observables") == "positions":
    for k in range(rows[0]["observable_llc"].shape[0]):
      columns[f"llc_position_{k + 1}"] = [float(r["observable_llc"][k]) for r in rows]
      columns[f"llc_position_{k + 1}_std"] = [float(r["observable_llc_std"][k]) for r in rows]
  return columns


def export_check(workdir: str, out_dir: str, name: str,
                 draw_points=(300, 500, 1000, 2000)) -> str:
  """Writes one check sweep of a run as ``llc_NAME.csv`` into a published directory (as
  :func:`export_run` does for its ``check_sweeps``; a sweep that recorded per-position losses
  adds ``llc_position_k`` and ``llc_position_k_std``, the per-position LLCs and their std over
  chains, ddof 1). Returns the path.

  Raises:
    UserError: no such run, or the sweep has no results.
  """
  return _write_check(workdir, out_dir, name, draw_points, merge=False)[0]


def _write_check(workdir, out_dir, name, draw_points, *, merge):
  run = rundir.RunDir(workdir)
  if not run.exists:
    run.require_run()
  table = _check_csv(run, name, draw_points)
  published = files.read_csv_if_present(out_dir, files.check_csv(name)) if merge else None
  overlap = []
  if published is not None:
    table, overlap = merge_check_tables(published, table)
  rundir.check_writable(out_dir)
  rundir.makedirs(out_dir)
  path = os.path.join(out_dir, files.check_csv(name))
  files.write_csv(path, table)
  return path, overlap


_CHECK_COLUMNS = ("step", "num_draws", "llc_mean", "llc_std", "num_chains")


def merge_check_tables(published: dict, new: dict) -> tuple[dict, list]:
  """One check sweep's table (the columns of :func:`export_run`'s ``llc_NAME.csv``) from two
  parts of it: every row of ``new`` and the rows of ``published`` at the steps ``new`` lacks, in
  order of step. This is how a sweep run in parts, on machines that did not keep each other's
  records, is published as one table.

  Both must hold step, num_draws, llc_mean, llc_std and num_chains, and every row of both the
  same num_draws (one sweep, not two sweeps of one name). A column only one part has (a draw
  point its records allowed, per-position LLCs) is NaN in the rows of the other.

  Returns ``(table, overlap)``: ``overlap`` lists ``(step, published llc_mean, new llc_mean)``
  at each step both hold, where ``new``'s row is kept. The same weights and chains give the same
  value but for float rounding; a checkpoint trained again on another machine differs in its
  last bits, and its LLC within the chains' noise.

  Raises:
    UserError: a part lacks a required column, or the parts' num_draws differ.
  """
  for label, table in (("published", published), ("new", new)):
    missing = [c for c in _CHECK_COLUMNS if c not in table]
    if missing:
      raise errors.UserError(f"the {label} check table lacks {', '.join(missing)}")
  draws = {int(d) for d in np.concatenate([published["num_draws"], new["num_draws"]])}
  if len(draws) > 1:
    raise errors.UserError(f"the two parts have different num_draws ({sorted(draws)}): not "
                           "one sweep")
  rows = {int(s): (new, i) for i, s in enumerate(new["step"])}
  overlap = [(int(s), float(published["llc_mean"][i]), float(new["llc_mean"][rows[int(s)][1]]))
             for i, s in enumerate(published["step"]) if int(s) in rows]
  for i, s in enumerate(published["step"]):
    rows.setdefault(int(s), (published, i))
  names = list(new) + [n for n in published if n not in new]
  order = sorted(rows)
  merged = {n: [rows[s][0][n][rows[s][1]] if n in rows[s][0] else np.nan for s in order]
            for n in names}
  return merged, overlap


def merge_check(workdir: str, out_dir: str, name: str,
                draw_points=(300, 500, 1000, 2000)) -> tuple[str, list]:
  """:func:`export_check`, keeping the rows of ``out_dir``'s ``llc_NAME.csv`` at the checkpoints
  the run has no record of (:func:`merge_check_tables`; with no such file, the run's alone).
  Returns ``(path, overlap)``.

  Raises:
    UserError: no such run, the sweep has no results, or the published table is of another
      sweep (:func:`merge_check_tables`).
  """
  return _write_check(workdir, out_dir, name, draw_points, merge=True)


def export_run(workdir: str, out_dir: str, *, sweep: str = "default", num_components: int = 16,
               reference_dir: str | None = None, check_sweeps=(),
               draw_points=(300, 500, 1000, 2000), allow_incomplete: bool = False) -> dict:
  """Writes the run's published artifacts to ``out_dir`` (see the module docstring).

  Stages and forms are recomputed from the written CSVs, with the options the run's own
  analysis recorded in its ``forms.json`` (the defaults without one). With ``reference_dir``
  (published files of a reference run, see :mod:`jaxdev.report.compare`), also writes
  ``comparison.md``, the side-by-side tables, and the LLC figure beside the reference's
  (:func:`jaxdev.report.compare.write_comparison`). Returns {"files": [paths], "stages": record or
  None, "forms": record or None}. Each of ``check_sweeps`` (other sweeps of the run, e.g. a
  reference sampler at a few checkpoints) is written as ``llc_NAME.csv``: step, num_draws,
  llc_mean, llc_std, num_chains (the chains that did not fail) and, for each of ``draw_points``
  below its length, the mean and std (ddof 1, as llc_std) over chains of the LLC over the first
  k draws (:func:`running_llc`).

  ``num_components`` principal components of the ED probe are written (at most the probe's
  rank); the forms are recomputed from as many as the run's own analysis used (its
  ``forms.json``; 4 without one).

  A run whose files are not whole (:func:`jaxdev.analysis.run.incomplete`: unfinished training,
  scheduled checkpoints missing or foreign ones, a partial sweep) is refused unless
  ``allow_incomplete``; then ``run.json`` lists why under ``incomplete``.

  Raises:
    UserError: ``workdir`` does not exist, has neither LLC results nor an ED probe, is incomplete
      (without ``allow_incomplete``), or ``out_dir`` is not writable.
  """
  run = rundir.RunDir(workdir)
  if not run.exists:
    run.require_run()  # a missing directory (or a file) is one clear error
  if reference_dir is not None and not os.path.isdir(reference_dir):
    raise errors.UserError(f"reference directory {reference_dir} does not exist")
  llc = run_lib.load_llc(workdir, sweep)
  if not llc and run.ed_probe()[0] is None:
    raise errors.UserError(f"{run.llc(sweep).path} has no LLC results and the run no ED probe: "
                           "run the sweep first")
  reasons = run_lib.incomplete(workdir, sweep)
  if reasons and not allow_incomplete:
    raise errors.UserError(f"{workdir} is incomplete ({'; '.join(reasons)}); pass "
                           "--allow_incomplete to publish it marked as such")
  if os.path.exists(out_dir) and os.path.samefile(out_dir, workdir):
    raise errors.UserError(f"--out {out_dir} is the run directory itself; give another directory")
  checks = {name: _check_csv(run, name, draw_points) for name in check_sweeps}
  rundir.check_writable(out_dir)
  with _replacing(out_dir, keep=lambda name: name not in _EXPORTED) as staging:
    out = _export_into(run, staging, llc=llc, checks=checks, sweep=sweep, reasons=reasons,
                       num_components=num_components, reference_dir=reference_dir)
  out["files"] = [os.path.join(out_dir, os.path.relpath(f, staging)) for f in out["files"]]
  return out


#: What :func:`export_run` writes into a published directory (recomputed each time: an old copy
#: it does not write again is stale and is dropped); other files there (check sweeps added with
#: :func:`export_check`, notes) are kept.
_EXPORTED = frozenset({files.LLC_CSV, files.METRICS_CSV, files.INDICATORS_CSV, files.ED_SCORES_CSV,
                       files.RUN_JSON, files.STAGES_JSON, files.FORMS_JSON, files.FIGURES,
                       files.COMPARISON_MD})


@contextlib.contextmanager
def _replacing(out_dir: str, keep):
  """A staging directory beside ``out_dir`` that replaces it when the block ends without error
  (holding the old directory's entries for which ``keep(name)`` is true, copied in first); on an
  error it is removed and ``out_dir`` is left as it was."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise errors.UserError(f"--out {out_dir} is a file, not a directory")
  parent = os.path.dirname(out_dir)
  rundir.makedirs(parent)
  try:
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-", dir=parent)
  except OSError as err:
    raise errors.UserError(f"cannot write into {parent}: {err.strerror or err}") from None
  try:
    if os.path.isdir(out_dir):
      for name in sorted(os.listdir(out_dir)):
        if keep(name):
          source = os.path.join(out_dir, name)
          copy = shutil.copytree if os.path.isdir(source) else shutil.copy2
          copy(source, os.path.join(staging, name))
    yield staging
    os.chmod(staging, 0o777 & ~rundir.umask())
    if os.path.isdir(out_dir):
      old = staging + "-old"
      os.rename(out_dir, old)
      try:
        os.rename(staging, out_dir)
      except BaseException:
        os.rename(old, out_dir)  # the old export back in its place
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(staging, out_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def _export_into(run, out_dir, *, llc, checks, sweep, reasons, num_components, reference_dir):
  """The body of :func:`export_run`, writing into the (staging) directory ``out_dir``."""
  written = []

  if llc:
    per_chain = np.asarray(llc["llc_per_chain"], np.float64)
    columns = {"step": llc["step"].astype(np.int64), "llc_mean": llc["llc_mean"],
               "llc_std": llc["llc_std"], "llc_se": run_lib.llc_standard_error(llc),
               "num_good": llc["num_good"], "status": llc["status"],
               "warnings": [json.dumps(list(w)) for w in llc["warnings"]]}
    per_chain = np.where(np.isfinite(per_chain), per_chain, np.nan)
    columns.update({f"chain_{c + 1}": per_chain[:, c] for c in range(per_chain.shape[1])})
    files.write_csv(os.path.join(out_dir, files.LLC_CSV), columns)
    written.append(os.path.join(out_dir, files.LLC_CSV))

  for name, table in checks.items():
    files.write_csv(os.path.join(out_dir, files.check_csv(name)), table)
    written.append(os.path.join(out_dir, files.check_csv(name)))

  records = run.metrics()
  if records:
    files.write_csv(os.path.join(out_dir, files.METRICS_CSV), _metrics_columns(records))
    written.append(os.path.join(out_dir, files.METRICS_CSV))
  summary = run.indicator_summary_path("csv")
  if os.path.isfile(summary):
    shutil.copyfile(summary, os.path.join(out_dir, files.INDICATORS_CSV))
    written.append(os.path.join(out_dir, files.INDICATORS_CSV))

  steps, outputs = run.ed_probe()
  options = {}
  if steps is not None and len(steps) >= 10:
    own = run.forms() or {}
    used = int(own.get("num_components", len(own.get("explained_variance", [])) or 4))
    result = ed.pca(outputs, max(num_components, used))
    columns = {"step": np.asarray(steps, np.int64)}
    columns.update({f"pc_{i + 1}": result.scores[:, i] for i in range(result.scores.shape[1])})
    files.write_csv(os.path.join(out_dir, files.ED_SCORES_CSV), columns)
    written.append(os.path.join(out_dir, files.ED_SCORES_CSV))
    options = {"explained_variance": [float(v) for v in result.explained_variance_ratio],
               "num_components": used,
               "sigma_schedule": own.get("sigma_schedule", "auto"),
               "ed_max_step": own.get("ed_max_step", "auto"),
               "construction": own.get("construction", "all"),
               "detector": own.get("detector", "vertices"),
               "num_nulls": int(own.get("num_nulls", 0)),
               "null_seed": int(own.get("null_seed", 0)),
               "null_dim": int(np.prod(np.shape(outputs)[1:]))}

  settings = run.llc(sweep).settings()
  rundir.atomic_write_json(os.path.join(out_dir, files.RUN_JSON), {
      "config": run.config_dict() if run.is_run else None,
      "identity": run.identity() if run.is_run else None, "sweep": sweep, "sweep_settings": settings,
      "ed_options": options, **({"incomplete": reasons} if reasons else {})})
  written.append(os.path.join(out_dir, files.RUN_JSON))

  own_forms = run.forms()
  result = analyze_artifacts(out_dir, null_record=own_forms)
  for name, record in ((files.STAGES_JSON, result["stages"]), (files.FORMS_JSON, result["forms"])):
    if record is not None:
      rundir.atomic_write_json(os.path.join(out_dir, name), record)
      written.append(os.path.join(out_dir, name))

  if os.path.isdir(run.figures):
    rundir.makedirs(os.path.join(out_dir, files.FIGURES))
    for name in sorted(os.listdir(run.figures)):
      if name.endswith(".png"):
        shutil.copyfile(os.path.join(run.figures, name), os.path.join(out_dir, files.FIGURES, name))
        written.append(os.path.join(out_dir, files.FIGURES, name))
  if reference_dir is not None:
    rundir.makedirs(os.path.join(out_dir, files.FIGURES))  # the comparison's figure goes there
    written += compare.write_comparison(out_dir, reference_dir)
  return {"files": written, **result}


def load_llc_csv(path: str) -> tuple[dict, np.ndarray | None]:
  """(``load_llc``-style dict, llc_se [N] or None) from a published ``llc.csv``."""
  table = files.read_csv(path)
  llc = {"step": table["step"], "llc_mean": table["llc_mean"].astype(np.float64),
         "llc_std": table["llc_std"].astype(np.float64), "status": table["status"],
         "warnings": ([json.loads(w) for w in table["warnings"]] if "warnings" in table
                      else [[] for _ in table["step"]])}
  if "num_good" in table:
    llc["num_good"] = table["num_good"]
  return llc, (table["llc_se"].astype(np.float64) if "llc_se" in table else None)


def analyze_artifacts(out_dir: str, *, null_record: dict | None = None,
                      recompute_nulls: bool = False) -> dict:
  """Stages and forms from published artifacts alone ({"stages": record or None, "forms":
  record or None}), the records as ``stages.json`` / ``forms.json`` hold them.

  Forms of a run analysed against null paths (``num_nulls`` in run.json's ED options): the null
  paths' strongest-form strengths are taken from ``null_record`` (a ``forms.json`` record;
  default the published one), and the p-values computed from them; with ``recompute_nulls``
  (or no such record) the null paths are drawn and analysed again (minutes per hundred paths).
  Each null path is seeded by its index, so any of them can be checked alone
  (:func:`jaxdev.analysis.nulls.run_nulls`).
  """
  meta = rundir.read_json(os.path.join(out_dir, files.RUN_JSON), "run.json")
  stages = None
  if os.path.isfile(os.path.join(out_dir, files.LLC_CSV)):
    llc, llc_se = load_llc_csv(os.path.join(out_dir, files.LLC_CSV))
    found = run_lib.stages_from_llc(llc, llc_se)
    if found["analysis"] is not None:
      stages = run_lib.stages_record(found["analysis"], meta.get("sweep", "default"),
                                     found["excluded"])
  forms = None
  scores_path = os.path.join(out_dir, files.ED_SCORES_CSV)
  if os.path.isfile(scores_path):
    table = files.read_csv(scores_path)
    names = sorted((n for n in table if n.startswith("pc_")), key=lambda n: int(n[3:]))
    options = meta.get("ed_options", {})
    names = names[:int(options.get("num_components", 4))]
    scores = np.stack([table[n].astype(np.float64) for n in names], axis=1)
    num_nulls = int(options.get("num_nulls", 0))
    nulls = None
    if num_nulls and not recompute_nulls:
      record = null_record if null_record is not None else files.load_json(out_dir,
                                                                           files.FORMS_JSON)
      nulls = (record or {}).get("nulls")
    explained = options.get("explained_variance", [np.nan] * len(names))[:len(names)]
    forms = run_lib.forms_from_scores(
        table["step"], scores, explained,
        task=(meta.get("config") or {}).get("task"),
        sigma_schedule=options.get("sigma_schedule", "auto"),
        ed_max_step=options.get("ed_max_step", "auto"),
        construction=options.get("construction", "all"),
        detector=options.get("detector", "vertices"), null_dim=options.get("null_dim"),
        num_nulls=num_nulls, null_seed=int(options.get("null_seed", 0)),
        null_reports=nulls)["record"]
  as_json = lambda record: None if record is None else json.loads(json.dumps(record))
  return {"stages": as_json(stages), "forms": as_json(forms)}


def reanalyze_forms(out_dir: str, *, detector: str, num_nulls: int = 0, null_seed: int = 0,
                    sigma_schedule: str = "auto") -> dict:
  """Finds the forms of a published directory again with another detector (and ``num_nulls``
  null paths per null model, drawn at the run's T and probe width D) and ``sigma_schedule``
  ("auto": the detector's own choice for the run, e.g. the rounded paper schedule for "turns"):
  records the options in ``run.json`` and writes ``forms.json``. Returns the forms record.

  Raises:
    UserError: the directory has no run.json, no ed_scores.csv, or no training config to give D.
  """
  meta_path = os.path.join(out_dir, files.RUN_JSON)
  meta = rundir.read_json(meta_path, "run.json")
  if not os.path.isfile(os.path.join(out_dir, files.ED_SCORES_CSV)):
    raise errors.UserError(f"{out_dir} has no {files.ED_SCORES_CSV}")
  if num_nulls and not meta.get("config"):
    raise errors.UserError(f"{meta_path} has no training config: the probe width is unknown")
  options = dict(meta.get("ed_options", {}))
  options.update(detector=detector, num_nulls=int(num_nulls), null_seed=int(null_seed),
                 sigma_schedule=sigma_schedule)
  if meta.get("config"):
    from jaxdev import tasks  # pylint: disable=import-outside-toplevel  (JAX, for this only)
    options["null_dim"] = tasks.probe_width(meta["config"])
  updated = dict(meta, ed_options=options)
  rundir.atomic_write_json(meta_path, updated)
  forms = analyze_artifacts(out_dir, recompute_nulls=True)["forms"]
  rundir.atomic_write_json(os.path.join(out_dir, files.FORMS_JSON), forms)
  return forms
