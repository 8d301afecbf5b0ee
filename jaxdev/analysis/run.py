"""analyze_run(workdir): stages, essential dynamics and figures from the files of a run.

Reads only files, through :class:`jaxdev.rundir.RunDir`; writes the run's stages, forms and
figures. Missing parts (no LLC sweep yet, no ED probe) are skipped and reported.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from jaxdev import errors
from jaxdev import rundir
from jaxdev.analysis import ed
from jaxdev.analysis import geometry
from jaxdev.analysis import plots
from jaxdev.analysis import stages as stages_lib
from jaxdev.analysis import turns


def load_llc(workdir: str, sweep: str = "default") -> dict:
  """Per-checkpoint LLC results of a sweep, sorted by step ({} if none): step, llc_mean, llc_std,
  num_failed, llc_per_chain [N, C], num_good, status ("ok", "failed", "outliers"; see :func:`jaxdev.llc.chain_status`)
  and warnings. A "failed" checkpoint has llc_mean NaN."""
  from jaxdev import llc as llc_lib  # pylint: disable=import-outside-toplevel
  return llc_lib.load_results(rundir.RunDir(workdir).llc(sweep).path,
                              keys=("step", "llc_mean", "llc_std", "num_failed", "llc_per_chain"),
                              required=("step", "llc_mean", "llc_std", "num_failed",
                                        "llc_per_chain"))


def load_observables(workdir: str, sweep: str = "default") -> dict:
  """The observables' part of a sweep's records, sorted by step ({} when the sweep recorded none):
  step, observable_llc [N, O] (per-position LLCs for ``"positions"``), observable_llc_std,
  observable_init, susceptibility, llc_mean [N], and ``name`` (the sweep's ``observables``)."""
  from jaxdev import llc as llc_lib  # pylint: disable=import-outside-toplevel
  records = rundir.RunDir(workdir).llc(sweep)
  name = (records.settings() or {}).get("observables")
  if not name:
    return {}
  keys = ("step", "llc_mean", "llc_std", "observable_llc", "observable_llc_std", "observable_init",
          "susceptibility")
  out = llc_lib.load_results(records.path, keys=keys, required=("step", "llc_mean", "llc_std",
                                                               "num_failed", "llc_per_chain"))
  if out:
    out["name"] = name
  return out


def restriction_mask(workdir: str, sweep: str) -> str:
  """What a restricted sweep samples, as recorded in its settings (``head:1.2``, ``*attn*``),
  or its name when it has no mask."""
  mask = (rundir.RunDir(workdir).llc(sweep).settings() or {}).get("mask")
  if not mask:
    return sweep
  return ",".join(mask) if isinstance(mask, (list, tuple)) else str(mask)


def excluded_checkpoints(llc: dict) -> list:
  """[{step, reason}] of the checkpoints left out of stage detection: status "failed" or no
  finite estimate."""
  excluded = []
  for i, step in enumerate(llc.get("step", [])):
    status = str(llc["status"][i]) if "status" in llc else "ok"
    if status == "failed" or not np.isfinite(llc["llc_mean"][i]):
      warnings = llc["warnings"][i] if "warnings" in llc else []
      reason = next((w for w in warnings if "survived" in w), None) or (
          warnings[0] if warnings else "no finite LLC estimate")
      excluded.append({"step": int(step), "reason": reason})
  return excluded


def load_ed(workdir: str):
  """(steps [T], outputs [T, D]) of the valid rows of the ED probe, or (None, None)."""
  return rundir.RunDir(workdir).ed_probe()


SIGMA_SCHEDULES = {"paper": ed.paper_sigma_schedule, "lm": ed.lm_sigma_schedule,
                   "scaled": ed.scaled_sigma_schedule,
                   "paper_smooth": ed.smooth_paper_sigma_schedule,
                   "scaled_smooth": ed.smooth_scaled_sigma_schedule}


def _sigma_schedule(name: str, num_steps: int):
  if name not in SIGMA_SCHEDULES:
    raise errors.UserError(f"unknown sigma_schedule {name!r} ({', '.join(SIGMA_SCHEDULES)}, auto)")
  return SIGMA_SCHEDULES[name](num_steps)


def _sigma_kinks(name: str, num_steps: int) -> list:
  """Indices where a σ schedule changes slope (rounded for the ``_smooth`` ones): the paper's
  40 and 200, scaled to T for "scaled"; none for "lm"."""
  if name.startswith("paper"):
    kinks = ed.PAPER_SIGMA_KINKS
  elif name.startswith("scaled"):
    kinks = [int(round(k * num_steps / 5001)) for k in ed.PAPER_SIGMA_KINKS]
  else:
    kinks = []
  return [int(k) for k in kinks if 0 < k < num_steps - 1]


#: The paper's four LR forms (Figure 3 of the paper; its seed-1 run), as training steps.
PAPER_FORM_STEPS = (2_500, 34_500, 106_100, 168_900)


def paper_form_support(steps, search, reports, sigma, task=None) -> list:
  """For each of the paper's forms (:data:`PAPER_FORM_STEPS`, regression runs only), what a
  turn search (:func:`turns.detect_forms`) shows within ±2σ of its index: the strongest
  candidate there (its step, strength, whether it lifts and is accepted, p-value against the
  null ``reports``), and the strongest turn of each PC plane there (degrees) among the indices
  whose chords stand out of the noise (None: none does), so a missing form is explained in
  numbers. [] for other tasks or when the run ends before a form."""
  steps = np.asarray(steps)
  if task not in (None, "regression"):
    return []
  sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(steps),))
  min_snr = search.settings["min_snr"]
  out = []
  for step in PAPER_FORM_STEPS:
    if step > steps[-1]:
      continue
    index = int(np.argmin(np.abs(steps - step)))
    half = max(1, int(round(2 * sigma[index])))
    lo, hi = max(0, index - half), min(len(steps) - 1, index + half)
    near = [f for f in search.candidates if lo <= f.index <= hi]
    best = max(near, key=lambda f: (f.qualified, f.strength), default=None)
    planes = {}
    for (i, j), angles in search.turns.items():
      clear = (search.snr[(i, j)][lo:hi + 1] >= min_snr) & np.isfinite(angles[lo:hi + 1])
      planes[f"{i},{j}"] = float(np.max(angles[lo:hi + 1][clear])) if clear.any() else None
    entry = {"paper_step": step, "index": index, "window": [int(steps[lo]), int(steps[hi])],
             "max_turn_deg_per_plane": planes, "candidate": None}
    if best is not None:
      entry["candidate"] = {
          "step": int(steps[best.index]), "strength_deg": float(best.strength),
          "spread": float(best.spread), "accepted": bool(best.accepted),
          "reason": best.reason,
          "p_value": None if best.p_value is None else float(best.p_value)}
      if reports:
        entry["candidate"]["p_value"] = max(turns.p_value(best.strength, r["strengths"])
                                            for r in reports.values())
    out.append(entry)
  return out


def _task(run) -> str | None:
  """The run's task ("regression", "language") from its config, or None without one."""
  return run.config_dict().get("task") if run.is_run else None


def _ed_max_step(value, task, steps):
  """The analysis window's last step: "auto" (200,000 for a regression run past it, the
  authors'), None or "none" (the whole run), or a step (int or digits)."""
  if value == "auto":
    return 200_000 if task == "regression" and steps[-1] > 200_000 else None
  if value is None or value == "none":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f"ed_max_step must be a step, 'auto' or 'none', got {value!r}") from None


def llc_standard_error(llc: dict):
  """Per-checkpoint standard error of the LLC: std over the successful chains (ddof = 1) / √their
  number, from ``llc_per_chain`` [N, C] (failed chains are NaN/Inf); None without it."""
  if "llc_per_chain" not in llc:
    return None
  per_chain = np.asarray(llc["llc_per_chain"], np.float64)
  ok = np.isfinite(per_chain)
  num = ok.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # checkpoints with < 2 good chains
    std = np.nanstd(np.where(ok, per_chain, np.nan), axis=1, ddof=1)
    return np.where(num >= 2, std / np.sqrt(num), np.nan)


def incomplete(workdir: str, sweep: str = "default") -> list:
  """Why the run's files are not the whole of what they promise, as sentences ([] when complete):
  training not finished; scheduled checkpoints missing, or checkpoints that are not in the
  schedule (for a run trained here: an imported one has the steps it was given); checkpoints of
  the run without a record of sweep ``sweep`` (when the sweep exists), or that it could not read.
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev import checkpoints
  from jaxdev import train as train_lib
  run = rundir.RunDir(workdir)
  reasons = []
  present = checkpoints.list_steps(run.checkpoints) if os.path.isdir(run.checkpoints) else []
  if run.is_run and not run.is_complete:
    reasons.append(f"training has not finished (newest checkpoint "
                   f"{present[-1] if present else 'none'} of {run.config.optim.num_steps} steps)")
  elif run.is_run and run.origin() is None:
    scheduled = set(train_lib.scheduled_checkpoints(run.config))
    missing, foreign = sorted(scheduled - set(present)), sorted(set(present) - scheduled)
    if missing:
      reasons.append(f"scheduled checkpoints missing at steps {_few(missing)}")
    if foreign:
      reasons.append(f"checkpoints not in the run's schedule at steps {_few(foreign)}")
  records = run.llc(sweep)
  if records.settings() is not None and present:
    unswept = sorted(set(present) - set(records.steps()))
    if unswept:
      reasons.append(f"sweep {sweep!r} has no record at {len(unswept)} of {len(present)} "
                     f"checkpoints (steps {_few(unswept)})")
  return reasons


def _few(steps: list) -> str:
  return ", ".join(map(str, steps[:5])) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")


def stages_from_llc(llc: dict, llc_se=None) -> dict:
  """Stage detection on one sweep's results (``load_llc``'s dict; ``llc_se`` [N] or None).

  Checkpoints with status "failed" or no finite estimate are left out. Returns {"analysis":
  :class:`~jaxdev.analysis.stages.StageAnalysis` or None (fewer than 4 estimates), "excluded":
  [{step, reason}], "notes": [str]}.
  """
  out = {"analysis": None, "excluded": [], "notes": []}
  if not llc:
    out["notes"].append("no LLC sweep results (or fewer than 4 estimated): stages skipped")
    return out
  excluded = out["excluded"] = excluded_checkpoints(llc)
  keep = ~np.isin(llc["step"], [e["step"] for e in excluded])
  flagged = [int(s) for s, t in zip(llc["step"], llc.get("status", [])) if t == "outliers"]
  if excluded and keep.any():
    out["notes"].append(
        f"{len(excluded)} of {len(keep)} checkpoints excluded from stage detection (too few "
        f"surviving chains): steps {[e['step'] for e in excluded]}")
  if flagged:
    out["notes"].append(f"outlier chains at steps {flagged} (estimates kept, flagged)")
  if not keep.any():
    out["notes"].append("no checkpoint had enough surviving chains for an LLC estimate: "
                        "stages skipped (reduce step_size or increase gamma)")
  elif keep.sum() >= 4:
    out["analysis"] = stages_lib.detect_stages(
        np.asarray(llc["step"])[keep], np.asarray(llc["llc_mean"])[keep],
        llc_se=None if llc_se is None else np.asarray(llc_se)[keep])
  else:
    out["notes"].append("no LLC sweep results (or fewer than 4 estimated): stages skipped")
  return out


def stages_record(analysis, sweep: str, excluded: list) -> dict:
  """The JSON record of ``stages.json``."""
  return dict(sweep=sweep, **analysis.to_dict(), excluded=excluded)


FORM_DETECTORS = ("vertices", "turns")


def _form_nulls(scores, sigma, smoothed, detect, *, dim, num_nulls, seed):
  """{kind: NullReport} of the turn detector on the run's null models (:mod:`nulls`)."""
  from jaxdev.analysis import nulls  # pylint: disable=import-outside-toplevel
  speed = nulls.speed_profile(smoothed)
  reports = {}
  for kind in nulls.NULL_KINDS:
    model = nulls.null_model(kind, len(scores), dim, speed=speed,
                             num_components=scores.shape[1])
    reports[kind] = nulls.run_nulls({"turns": detect}, model, num_nulls, seed=seed,
                                    kind=kind)["turns"]
  return reports


def forms_from_scores(steps, scores, explained_variance, *, task=None, sigma_schedule="auto",
                      ed_max_step="auto", construction="all", detector="vertices",
                      null_dim=None, num_nulls: int = 0, null_seed: int = 0,
                      null_reports: dict | None = None) -> dict:
  """Forms of essential dynamics from the PC scores of a trajectory.

  Everything after the PCA depends only on the scores, so this reproduces a run's forms from its
  published scores. Args: ``steps`` [T], ``scores`` [T, k] (unsmoothed), ``explained_variance``
  [k] (ratios, recorded only), the run's ``task`` ("regression", "language" or None) and
  ``analyze_run``'s options. ``detector``: "vertices" (:func:`geometry.search_forms`: curvature
  extrema whose circles coincide; with ``construction`` "authors", the authors' procedure,
  :func:`geometry.search_forms_authors`) or "turns" (:func:`turns.detect_forms`, the
  detector calibrated on null paths; "auto" σ then takes the schedule with rounded corners). With
  ``num_nulls`` > 0 (and "turns"), that many null paths of each model of :mod:`nulls` with the
  run's T and ``null_dim`` = D give every candidate a p-value (the larger of the two models') and
  the record the null reports; ``null_reports`` ({kind: a recorded report with "strengths"}, as
  ``forms.json``'s "nulls" holds them) stands for paths already analysed. Returns {"smoothed":
  [T, k], "search": the form search, "record": the JSON record of ``forms.json``}.
  """
  steps = np.asarray(steps)
  scores = np.asarray(scores, np.float64)
  if detector not in FORM_DETECTORS:
    raise errors.UserError(f"unknown form detector {detector!r} ({', '.join(FORM_DETECTORS)})")
  if sigma_schedule == "auto":
    sigma_schedule = ("lm" if task == "language" else "paper" if len(steps) >= 1000
                      else "scaled")
    if detector == "turns" and sigma_schedule != "lm":
      sigma_schedule += "_smooth"
  ed_max_step = _ed_max_step(ed_max_step, task, steps)
  max_index = None if ed_max_step is None else int(np.searchsorted(steps, ed_max_step, "right"))
  sigma = _sigma_schedule(sigma_schedule, len(steps))
  smoothed = ed.smooth(scores, sigma)
  record = {"sigma_schedule": sigma_schedule, "ed_max_step": ed_max_step,
            "construction": construction, "explained_variance": [float(v) for v in
                                                                 explained_variance]}
  if detector == "turns":
    record["detector"], record["num_components"] = detector, int(scores.shape[1])
    options = {"construction": construction, "max_index": max_index}
    reports = {}
    if num_nulls > 0 and null_reports:
      reports = {kind: dict(null_reports[kind]) for kind in sorted(null_reports)}
      if any(len(r.get("strengths", [])) != num_nulls for r in reports.values()):
        raise errors.UserError(f"the recorded null reports do not hold {num_nulls} paths each")
    elif num_nulls > 0:
      if null_dim is None:
        raise errors.UserError("null paths need the probe's width (null_dim)")
      detect = lambda raw: turns.detect_forms(raw, sigma, **options)
      computed = _form_nulls(scores, sigma, smoothed, detect, dim=int(null_dim),
                             num_nulls=num_nulls, seed=null_seed)
      reports = {kind: {k: v for k, v in dict(r.to_dict(), dim=int(null_dim)).items()
                        if k != "seconds"}  # a record holds what the files re-derive
                 for kind, r in computed.items()}
    search = turns.detect_forms(scores, sigma, smoothed=smoothed, **options)
    for form in search.candidates:
      if reports:
        form.p_value = max(turns.p_value(form.strength, r["strengths"]) for r in reports.values())
    record.update(search.to_dict(steps))
    record["num_nulls"], record["null_seed"] = int(num_nulls), int(null_seed)
    record["kinks"] = [int(steps[i]) for i in _sigma_kinks(sigma_schedule, len(steps))]
    record["paper_forms"] = paper_form_support(steps, search, reports, sigma, task)
    if reports:
      record["nulls"] = reports
  elif construction == "authors":
    search = geometry.search_forms_authors(smoothed, sigma=sigma, max_index=max_index)
    record.update(search.to_dict(steps))
  else:
    search = geometry.search_forms(smoothed, sigma=sigma, construction=construction,
                                   max_index=max_index)
    record.update(search.to_dict(steps))
  return {"smoothed": smoothed, "search": search, "record": record}


def analyze_run(workdir: str, *, sweep: str = "default", num_components: int = 4,
                sigma_schedule: str = "auto", ed_max_step="auto",
                form_construction: str = "all", form_detector: str = "vertices",
                form_nulls: int = 0, restricted: Sequence[str] = ()) -> dict:
  """Detects stages from the LLC curve and forms from the ED probe; draws the figures.

  Args:
    workdir: the run directory.
    sweep: which LLC sweep (``RunDir(workdir).llc(sweep)``).
    num_components: principal components for essential dynamics (the authors used 4).
    sigma_schedule: "auto" (from the run's task: "lm" for a language run; for regression "paper"
      when the probe has ≥ 1,000 rows, else "scaled"), "scaled" (the paper's LR schedule scaled
      to the probe length), "paper" (the LR schedule by index) or "lm" (linspace(1, 50)).
    ed_max_step: analyse forms only at steps ≤ this (int or digits); "auto": 200,000 for a
      regression run that goes past it (the authors' window), else the whole run; None or
      "none": the whole run.
    form_construction: "all" PC pairs must agree, "pc1" (the authors' planes (PC1, PCj)), or
      "authors" (the authors' procedure, :func:`geometry.search_forms_authors`; "vertices" only).
    form_detector: "vertices" (curvature extrema whose osculating circles coincide) or "turns"
      (sharp turns judged against the curve's noise, calibrated on null paths; see
      :func:`forms_from_scores`).
    form_nulls: with "turns", null paths per null model for the forms' p-values (0: none; about
      3 s each at the paper's 5,001 probes).
    restricted: names of weight-restricted sweeps of the run (``NAME-head1.2``, ...), drawn
      together with the stages of ``sweep`` in ``figures/llc_restricted.png``, each labelled
      with its recorded mask. When ``sweep`` recorded observables, their LLCs and
      susceptibilities go to ``figures/llc_OBSERVABLES.png`` (e.g. ``llc_positions.png``).

  Returns:
    A summary dict: stages, forms, explained variance, figure paths and notes.
  """
  run = rundir.RunDir(workdir)
  if not run.exists:
    run.require_run()  # a missing directory (or a file) is one clear error
  rundir.check_writable(run.figures)
  rundir.makedirs(run.figures)
  summary = {"workdir": workdir, "stages": [], "forms": [], "figures": [], "notes": []}
  moved = run.set_aside_damaged_metrics()
  if moved:
    summary["notes"].append(f"{moved} damaged line(s) of {run.metrics_path} moved to "
                            f"{run.metrics_path}{rundir.DAMAGED_SUFFIX}")
  summary["notes"] += [f"incomplete: {reason}" for reason in incomplete(workdir, sweep)]
  evals = run.metrics("eval")
  loss_steps = [r["step"] for r in evals] or None
  test_loss = [r["loss"] for r in evals] or None

  llc = load_llc(workdir, sweep)
  llc_se = llc_standard_error(llc) if llc else None
  stage_result = stages_from_llc(llc, llc_se)
  analysis = stage_result["analysis"]
  summary["excluded"] = stage_result["excluded"]
  summary["notes"] += stage_result["notes"]
  if analysis is not None:
    summary["stages"] = [s.to_dict() for s in analysis.stages]
    summary["milestones"] = [m.to_dict() for m in analysis.milestones]
    run.write_stages(stages_record(analysis, sweep, stage_result["excluded"]))
    _save(plots.plot_slope(analysis), run.figure("llc_slope.png"), summary)
  if llc:
    fig = plots.plot_llc(llc["step"], llc["llc_mean"], llc["llc_std"], loss_steps=loss_steps,
                         llc_se=llc_se, excluded_steps=[e["step"] for e in summary["excluded"]],
                         test_loss=test_loss, analysis=analysis,
                         title=f"LLC over training ({os.path.basename(os.path.normpath(workdir))})")
    _save(fig, run.figure("llc.png"), summary)

  curves = {}
  for name in restricted:
    records = load_llc(workdir, name)
    if records:
      curves[restriction_mask(workdir, name)] = (records["step"], records["llc_mean"],
                                                 records["llc_std"])
  stage_list = analysis.stages if analysis is not None else ()
  title = os.path.basename(os.path.normpath(workdir))
  if curves:
    fig = plots.plot_restricted(curves, stages=stage_list,
                                full=(llc["step"], llc["llc_mean"]) if llc else None,
                                title=f"Weight-restricted LLCs ({title})")
    _save(fig, run.figure("llc_restricted.png"), summary)
  observed = load_observables(workdir, sweep)
  if observed:
    fig = plots.plot_observables(observed["step"], observed["observable_llc"],
                                 observed["observable_llc_std"], observed["susceptibility"],
                                 llc_mean=observed["llc_mean"], stages=stage_list,
                                 name=observed["name"], title=title)
    _save(fig, run.figure(f"llc_{observed['name']}.png"), summary)

  steps, outputs = load_ed(workdir)
  if steps is not None and len(steps) >= 10:
    result = ed.pca(outputs, num_components)
    found = forms_from_scores(steps, result.scores, result.explained_variance_ratio,
                              task=_task(run), sigma_schedule=sigma_schedule,
                              ed_max_step=ed_max_step, construction=form_construction,
                              detector=form_detector,
                              null_dim=int(np.prod(np.shape(outputs)[1:])),
                              num_nulls=form_nulls)
    forms, smoothed = found["search"].forms, found["smoothed"]
    summary["explained_variance"] = found["record"]["explained_variance"]
    summary["forms"] = [f.to_dict(steps) for f in forms]
    run.write_forms(found["record"])
    kinks = _sigma_kinks(found["record"]["sigma_schedule"], len(steps))
    _save(plots.plot_ed(smoothed, steps, forms=forms, stages=stage_list,
                        candidates=found["search"].candidates, kinks=kinks,
                        explained=result.explained_variance_ratio,
                        circles_every=max(1, len(steps) // 60)),
          run.figure("ed_pcs.png"), summary)
    _save(plots.plot_scores(steps, result.scores, smoothed, forms), run.figure("ed_scores.png"), summary)
    _save(plots.plot_form_potentials(steps, smoothed, forms), run.figure("ed_form_potentials.png"), summary)
  else:
    summary["notes"].append("no ED probe (or fewer than 10 rows): essential dynamics skipped")
  # What an earlier analysis made and this one did not (a sweep that has failed since, another
  # sweep's curve) no longer describes the run: removed (each is remade from the records).
  made = set(summary["figures"]) | ({run.stages_path} if analysis is not None else set()) | (
      {run.forms_path} if summary.get("explained_variance") is not None else set())
  for path in [run.stages_path, run.forms_path] + [run.figure(n) for n in _ANALYSIS_FIGURES]:
    if path not in made and os.path.exists(path):
      os.remove(path)
      summary["notes"].append(f"removed {path}: made by an earlier analysis, not by this one")
  return summary


#: The figures :func:`analyze_run` makes under fixed names from ``sweep`` and the ED probe
#: (``llc_restricted.png`` depends on the ``restricted`` asked for, and is left alone).
_ANALYSIS_FIGURES = ("llc_slope.png", "llc.png", "ed_pcs.png", "ed_scores.png",
                     "ed_form_potentials.png")


def _save(fig, path, summary):
  rundir.atomic_save_figure(fig, path, dpi=110)  # a Figure made without pyplot: nothing to close
  summary["figures"].append(path)


def format_summary(summary: dict) -> str:
  """A short printable summary of ``analyze_run``'s result."""
  lines = []
  if summary["stages"]:
    lines.append("stages (from the LLC curve):")
    for i, s in enumerate(summary["stages"]):
      lines.append(f"  {s['kind']}{i + 1}: steps {s['start']:>9.0f} – {s['end']:<9.0f} "
                   f"LLC {'+' if s['llc_change'] >= 0 else ''}{s['llc_change']:.1f} "
                   f"± {s['llc_change_std']:.1f}")
    for m in summary.get("milestones", []):
      lines.append(f"  boundary at step {m['step']:.0f} ({m['step_low']:.0f}–{m['step_high']:.0f}): "
                   f"{m['rule']}, slope {m['slope']:+.2f} ± {m['slope_std']:.2f} per ln step"
                   + (f", dip {m['dip_ratio']:.2f} of its neighbours" if m["rule"] == "plateau"
                      else ""))
  if "explained_variance" in summary:
    ev = ", ".join(f"{100 * v:.1f}%" for v in summary["explained_variance"])
    lines.append(f"essential dynamics: explained variance {ev}; forms at steps "
                 f"{[f['step'] for f in summary['forms']] or 'none'}")
  lines += [f"note: {n}" for n in summary["notes"]]
  lines.append(f"figures: {', '.join(os.path.basename(p) for p in summary['figures'])} "
               f"in {rundir.RunDir(summary['workdir']).figures}")
  return "\n".join(lines)
