"""analyze_run(run_dir): stages, essential dynamics and figures from the files of a run.

Reads only files (see README "Run directory"); writes ``stages.json``, ``forms.json`` and
``figures/*.png``. Missing parts (no LLC sweep yet, no ED probe) are skipped and reported.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdev.analysis import ed
from jaxdev.analysis import geometry
from jaxdev.analysis import plots
from jaxdev.analysis import stages as stages_lib


def _read_jsonl(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def load_llc(run_dir: str, sweep: str = "default") -> dict:
  """Per-checkpoint LLC results of a sweep, sorted by step ({} if none)."""
  out_dir = os.path.join(run_dir, "llc", sweep)
  if not os.path.isdir(out_dir):
    return {}
  files = sorted(f for f in os.listdir(out_dir) if f.startswith("step_") and f.endswith(".npz"))
  if not files:
    return {}
  records = [np.load(os.path.join(out_dir, f)) for f in files]
  return {k: np.array([r[k] for r in records]) for k in ("step", "llc_mean", "llc_std", "num_failed")}


def load_ed(run_dir: str):
  """(steps [T], outputs [T, D]) of the valid rows of the ED probe, or (None, None)."""
  directory = os.path.join(run_dir, "ed_outputs")
  if not os.path.exists(os.path.join(directory, "progress.json")):
    return None, None
  with open(os.path.join(directory, "progress.json")) as f:
    n = json.load(f)["num_written"]
  steps = np.load(os.path.join(directory, "steps.npy"))[:n]
  outputs = np.load(os.path.join(directory, "outputs.npy"), mmap_mode="r")[:n]
  return steps, np.asarray(outputs, np.float32).reshape(n, -1)


def _sigma_schedule(name: str, num_steps: int):
  return {"paper": ed.paper_sigma_schedule, "lm": ed.lm_sigma_schedule,
          "scaled": ed.scaled_sigma_schedule}[name](num_steps)


def analyze_run(run_dir: str, *, sweep: str = "default", num_components: int = 3,
                sigma_schedule: str = "scaled", tolerance: float | None = None) -> dict:
  """Detects stages from the LLC curve and forms from the ED probe; draws the figures.

  Args:
    run_dir: the run directory.
    sweep: which LLC sweep (``llc/SWEEP``).
    num_components: principal components for essential dynamics.
    sigma_schedule: "scaled" (the paper's LR schedule scaled to the probe length), "paper"
      (the LR schedule by index) or "lm" (linspace(1, 50)).
    tolerance: |slope| threshold for plateaus (default: see ``detect_stages``).

  Returns:
    A summary dict: stages, forms, explained variance, figure paths and notes.
  """
  if not os.path.isdir(run_dir):
    raise FileNotFoundError(f"run directory {run_dir} does not exist")
  figures = os.path.join(run_dir, "figures")
  os.makedirs(figures, exist_ok=True)
  summary = {"run_dir": run_dir, "stages": [], "forms": [], "figures": [], "notes": []}
  evals = [r for r in _read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("split") == "eval"]
  loss_steps = [r["step"] for r in evals] or None
  test_loss = [r["loss"] for r in evals] or None

  llc = load_llc(run_dir, sweep)
  analysis = None
  if llc and len(llc["step"]) >= 4:
    analysis = stages_lib.detect_stages(llc["step"], llc["llc_mean"], llc_std=llc["llc_std"],
                                        tolerance=tolerance)
    summary["stages"] = [s.to_dict() for s in analysis.stages]
    with open(os.path.join(run_dir, "stages.json"), "w") as f:
      json.dump({"sweep": sweep, "boundaries": analysis.boundaries,
                 "tolerance": analysis.tolerance, "stages": summary["stages"]}, f, indent=2)
    fig = plots.plot_slope(analysis)
    _save(fig, os.path.join(figures, "llc_slope.png"), summary)
  else:
    summary["notes"].append("no LLC sweep results (or fewer than 4): stages skipped")
  if llc:
    fig = plots.plot_llc(llc["step"], llc["llc_mean"], llc["llc_std"], loss_steps=loss_steps,
                         test_loss=test_loss, analysis=analysis,
                         title=f"LLC over training ({os.path.basename(os.path.normpath(run_dir))})")
    _save(fig, os.path.join(figures, "llc.png"), summary)

  steps, outputs = load_ed(run_dir)
  if steps is not None and len(steps) >= 10:
    result = ed.pca(outputs, num_components)
    smoothed = ed.smooth(result.scores, _sigma_schedule(sigma_schedule, len(steps)))
    forms = geometry.find_forms(smoothed)
    summary["explained_variance"] = [float(v) for v in result.explained_variance_ratio]
    summary["forms"] = [f.to_dict(steps) for f in forms]
    with open(os.path.join(run_dir, "forms.json"), "w") as f:
      json.dump({"sigma_schedule": sigma_schedule, "explained_variance": summary["explained_variance"],
                 "forms": summary["forms"]}, f, indent=2)
    stage_list = analysis.stages if analysis is not None else []
    _save(plots.plot_ed(smoothed, steps, forms=forms, stages=stage_list,
                        explained=result.explained_variance_ratio,
                        circles_every=max(1, len(steps) // 60)),
          os.path.join(figures, "ed_pcs.png"), summary)
    _save(plots.plot_scores(steps, result.scores, smoothed, forms), os.path.join(figures, "ed_scores.png"), summary)
    _save(plots.plot_form_potentials(steps, smoothed, forms), os.path.join(figures, "ed_form_potentials.png"), summary)
  else:
    summary["notes"].append("no ED probe (or fewer than 10 rows): essential dynamics skipped")
  return summary


def _save(fig, path, summary):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig.savefig(path, dpi=110)
  plt.close(fig)
  summary["figures"].append(path)


def format_summary(summary: dict) -> str:
  """A short printable summary of ``analyze_run``'s result."""
  lines = []
  if summary["stages"]:
    lines.append("stages (from the LLC curve):")
    for i, s in enumerate(summary["stages"]):
      lines.append(f"  {s['kind']}{i + 1}: steps {s['start']:>9.0f} – {s['end']:<9.0f} "
                   f"LLC {'+' if s['llc_change'] >= 0 else ''}{s['llc_change']:.1f}")
  if "explained_variance" in summary:
    ev = ", ".join(f"{100 * v:.1f}%" for v in summary["explained_variance"])
    lines.append(f"essential dynamics: explained variance {ev}; forms at steps "
                 f"{[f['step'] for f in summary['forms']] or 'none'}")
  lines += [f"note: {n}" for n in summary["notes"]]
  lines.append(f"figures: {', '.join(os.path.basename(p) for p in summary['figures'])} "
               f"in {os.path.join(summary['run_dir'], 'figures')}")
  return "\n".join(lines)
