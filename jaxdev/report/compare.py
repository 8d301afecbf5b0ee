"""A run's published artifacts beside a reference run's published files, as Markdown tables.

The reference is a directory in the layout of the authors' seed-0 analysis files as converted to
CSV (``llc.csv``: step, llc_mean, llc_chain_std (the std over chains, ddof 1), ...;
``evals.csv``: step, test_loss, test_loss_position_k (their training loop's evaluation), ...;
``hessian.csv``: step, hessian_trace, eig_k; ``layernorm.csv``: step, layernorm, weight_mean,
...); files it lacks are skipped. The run side is a directory written by
:func:`jaxdev.report.artifacts.export_run`. Values are taken at the checkpoint nearest (in log
step) to each step asked for, and the step used is shown; in the LLC table a run with no
checkpoint within ×1.5 of a step shows "–" there. The paper's own numbers come from
:mod:`jaxdev.report.reference`.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdev import errors
from jaxdev import rundir
from jaxdev.analysis import stages as stages_lib
from jaxdev.report import files
from jaxdev.report import reference

MAX_RATIO = 1.5  # a checkpoint stands for a step within this factor of (step + 1)


def nearest(steps, target: float) -> int:
  """Index of the step nearest to ``target`` in ln(step + 1)."""
  steps = np.asarray(steps, np.float64)
  return int(np.argmin(np.abs(np.log1p(steps) - np.log1p(target))))


def _fmt(value, digits: int = 1) -> str:
  return "–" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def _step(value) -> str:
  return f"{int(round(float(value))):,}"


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def llc_table(run_dir: str, reference_dir: str, steps=reference.LLC_STEPS) -> str:
  """LLC (mean ± std over chains) of the run and of the reference at ``steps``, beside the
  paper's mean over five seeds (:data:`jaxdev.report.reference.PAPER_LLC`; "–" at a step it
  does not give)."""
  ours = files.read_csv(os.path.join(run_dir, files.LLC_CSV))
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  rows = []
  for target in steps:
    i = nearest(ours["step"], target)
    if abs(np.log1p(ours["step"][i]) - np.log1p(target)) > np.log(MAX_RATIO):
      row = [_step(target), "–", "–"]  # the run has no checkpoint near this step
    else:
      row = [_step(target), _step(ours["step"][i]),
             f"{_fmt(ours['llc_mean'][i])} ± {_fmt(ours['llc_std'][i])}"]
    if ref is not None:
      j = nearest(ref["step"], target)
      row += [_step(ref["step"][j]), f"{_fmt(ref['llc_mean'][j])} ± {_fmt(ref['llc_chain_std'][j])}"]
    row.append(_step(reference.PAPER_LLC[target]) if target in reference.PAPER_LLC else "–")
    rows.append(row)
  header = ["step", "checkpoint", "jaxdev LLC ± chain std"]
  if ref is not None:
    header += ["reference checkpoint", "reference LLC ± chain std"]
  header.append("paper (mean of 5 seeds)")
  return _table(header, rows)


DIFFERENCE_RANGES = ((0, 1_000), (1_000, 10_000), (10_000, 100_000), (100_000, 500_001))
PAIR_TOLERANCE = 0.01  # checkpoints of two runs are compared when within 1 step or 1 %


def difference_table(run_dir: str, reference_dir: str, ranges=DIFFERENCE_RANGES, *,
                     check: str | None = None) -> str | None:
  """The run's LLC (with ``check``, that check sweep's) minus the reference's at every pair of
  matching checkpoints, by step range.

  A run's checkpoint is paired with the reference's nearest in ln(step + 1) when they are at most
  one step or :data:`PAIR_TOLERANCE` of the step apart (the authors' checkpoint steps are this
  project's, or one less). Per range: the number of pairs, the median and largest absolute
  difference, the median difference and the median difference relative to the reference LLC.
  None without a reference curve.
  """
  name = files.LLC_CSV if check is None else files.check_csv(check)
  ours = files.read_csv(os.path.join(run_dir, name))
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  if ref is None:
    return None
  pairs = []
  for step, value in zip(ours["step"], ours["llc_mean"]):
    j = nearest(ref["step"], step)
    gap = abs(ref["step"][j] - step)
    if gap <= max(1.0, PAIR_TOLERANCE * step) and np.isfinite(value):
      pairs.append((step, value - ref["llc_mean"][j], ref["llc_mean"][j]))
  return _range_table(pairs, ranges, "reference")


def reduction_summary_table(run_dir: str, check: str, ranges=DIFFERENCE_RANGES) -> str:
  """The main sweep's LLC minus check sweep ``check``'s at every checkpoint both hold (the same
  step, both finite), by step range, in :func:`difference_table`'s columns (relative to the
  check's LLC): what the main sweep's cheaper sampler costs, in one row per range."""
  ours = files.read_csv(os.path.join(run_dir, files.LLC_CSV))
  table = files.read_csv(os.path.join(run_dir, files.check_csv(check)))
  index = {int(s): i for i, s in enumerate(ours["step"])}
  pairs = []
  for step, value in zip(table["step"], table["llc_mean"]):
    mine = ours["llc_mean"][index[int(step)]] if int(step) in index else np.nan
    if np.isfinite(mine) and np.isfinite(value):
      pairs.append((step, mine - value, value))
  return _range_table(pairs, ranges, check)


def _range_table(pairs, ranges, against: str) -> str:
  """Rows per step range of (step, difference, value it is relative to) pairs."""
  rows = []
  for low, high in ranges:
    sel = [(d, r) for s, d, r in pairs if low <= s < high]
    if not sel:
      rows.append([f"{_step(low)}–{_step(high - 1)}", "0", "–", "–", "–", "–"])
      continue
    d = np.array([x for x, _ in sel])
    rel = np.array([x / r for x, r in sel if abs(r) > 1e-9])
    rows.append([f"{_step(low)}–{_step(high - 1)}", str(len(sel)), _fmt(np.median(np.abs(d))),
                 _fmt(np.max(np.abs(d))), _fmt(np.median(d)),
                 "–" if not rel.size else f"{100 * np.median(rel):+.1f} %"])
  header = ["steps", "checkpoints", "median abs. Δ", "largest abs. Δ", "median Δ",
            f"median Δ / {against}"]
  return _table(header, rows)


def reference_stages(reference_dir: str):
  """Stage detection (default settings) on the reference's LLC curve, or None without one."""
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  if ref is None:
    return None
  return stages_lib.detect_stages(ref["step"], ref["llc_mean"], llc_std=ref["llc_chain_std"],
                                  num_chains=reference.REFERENCE_CHAINS)


def match_boundaries(found, paper=reference.PAPER_BOUNDARIES):
  """Pairs detected boundaries with paper boundaries, nearest in ln(step + 1), one to one.

  Each detected boundary goes to its nearest paper boundary; where several go to the same one,
  the nearest of them is paired with it and the others stay unpaired. Returns ``(pairs,
  unpaired)``: ``pairs[k]`` is the detected step paired with ``paper[k]`` or None, ``unpaired``
  the other detected steps in order.
  """
  paper = [float(p) for p in paper]
  pairs, unpaired = [None] * len(paper), []
  claims = {}
  for step in found:
    claims.setdefault(nearest(paper, step), []).append(step)
  for k, steps in claims.items():
    best = min(range(len(steps)), key=lambda i: abs(np.log1p(steps[i]) - np.log1p(paper[k])))
    pairs[k] = steps[best]
    unpaired += steps[:best] + steps[best + 1:]
  return pairs, sorted(unpaired)


def _boundary_rows(columns, paper=reference.PAPER_BOUNDARIES, low: float = 0.0):
  """Rows of a boundary table: one per paper boundary at or above ``low`` (labelled LRk/LRk+1),
  each holding per column the detected boundary paired with it by :func:`match_boundaries`; a
  detected boundary left unpaired gets a row of its own ("–" as the paper's), placed by its step.
  ``columns`` are lists of (step, cell text) pairs."""
  keep = [(k, float(p)) for k, p in enumerate(paper) if p >= low]
  rows = [(p, [f"LR{k + 1}/LR{k + 2}", _step(p)] + ["–"] * len(columns)) for k, p in keep]
  for c, found in enumerate(columns):
    cells = dict(found)
    pairs, unpaired = match_boundaries(list(cells), [p for _, p in keep])
    for k, step in enumerate(pairs):
      if step is not None:
        rows[k][1][2 + c] = cells[step]
    for step in unpaired:
      row = ["–"] * (2 + len(columns))
      row[2 + c] = cells[step]
      rows.append((float(step), row))
  rows.sort(key=lambda r: r[0])
  return [r for _, r in rows]


def stages_table(run_dir: str, reference_dir: str, paper=reference.PAPER_BOUNDARIES) -> str:
  """Stage boundaries: the paper's, jaxdev's on the reference curve, and jaxdev's on the run.

  One row per paper boundary (labelled LRk/LRk+1) holding the detected boundary paired with it by
  :func:`match_boundaries`; a detected boundary left unpaired gets a row of its own ("–" as the
  paper's), placed by its step.
  """
  record = files.load_json(run_dir, files.STAGES_JSON) or {"milestones": []}
  ref = reference_stages(reference_dir)
  columns = [[(b, _step(b)) for b in (ref.boundaries if ref is not None else [])],
             [(m["step"], f"{_step(m['step'])} ({m['rule']})") for m in record["milestones"]]]
  return _table(["boundary", "paper", "reference curve (jaxdev's detector)", "this run"],
                _boundary_rows(columns, paper))


MIN_STAGE_CHECKPOINTS = 12  # a check sweep with fewer checkpoints gets no stage table


def check_stages_table(run_dir: str, reference_dir: str, check: str,
                       paper=reference.PAPER_BOUNDARIES) -> str | None:
  """Stage boundaries of check sweep ``check`` alone, beside the reference curve's at the same
  checkpoints (the same detector, default settings, on both).

  A check sweep covers only some checkpoints, from its first step s0 on, so only the paper's
  boundaries at or above s0 have rows, and the reference curve is cut to the same checkpoints
  (its nearest in ln step to each) so that the two columns see the same spacing. None where the
  sweep has fewer than :data:`MIN_STAGE_CHECKPOINTS` checkpoints, its CSV has no ``num_chains``
  column (published before there was one), or there is no reference curve.
  """
  table = files.read_csv(os.path.join(run_dir, files.check_csv(check)))
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  if ref is None or len(table["step"]) < MIN_STAGE_CHECKPOINTS or "num_chains" not in table:
    return None
  mine = stages_lib.detect_stages(table["step"], table["llc_mean"], llc_std=table["llc_std"],
                                  num_chains=table["num_chains"])
  picks = sorted({nearest(ref["step"], s) for s in table["step"]})
  theirs = stages_lib.detect_stages(ref["step"][picks], ref["llc_mean"][picks],
                                    llc_std=ref["llc_chain_std"][picks],
                                    num_chains=reference.REFERENCE_CHAINS)
  columns = [[(b, _step(b)) for b in theirs.boundaries],
             [(m.step, f"{_step(m.step)} ({m.rule})") for m in mine.milestones]]
  return _table(["boundary", "paper", "reference curve at the same checkpoints", check],
                _boundary_rows(columns, paper, low=float(np.min(table["step"]))))


def _form_cell(form) -> str:
  text = f"{_step(form['step'])} ({_step(form['step_interval'][0])}–{_step(form['step_interval'][1])}"
  text += f"; {form['strength_deg']:.0f}°"
  if form.get("p_value") is not None:
    text += f", p = {form['p_value']:.2g}"
  return text + ")"


def forms_table(run_dir: str, paper=reference.PAPER_FORMS) -> str:
  """ED forms of the run beside the paper's. With the turn detector's record (``paper_forms``
  in ``forms.json``): per paper form, the run's forms whose interval overlaps its ±2σ window,
  the strongest candidate inside the window and why it is not a form, and the planes' strongest
  turns there that stand out of the noise; else the nearest form of the run."""
  record = files.load_json(run_dir, files.FORMS_JSON) or {"forms": []}
  ours = sorted(f["step"] for f in record["forms"])
  if record.get("paper_forms"):
    rows = []
    for entry in record["paper_forms"]:
      lo, hi = entry["window"]
      overlapping = [f for f in record["forms"]
                     if f["step_interval"][0] <= hi and f["step_interval"][1] >= lo]
      candidate = entry["candidate"]
      turns = [v for v in entry["max_turn_deg_per_plane"].values() if v is not None]
      planes = (f"{min(turns):.0f}–{max(turns):.0f}° ({len(turns)} of "
                f"{len(entry['max_turn_deg_per_plane'])} planes)" if turns else "none")
      rows.append([_step(entry["paper_step"]), f"{_step(lo)}–{_step(hi)}",
                   ", ".join(_form_cell(f) for f in overlapping) or "–",
                   "–" if candidate is None else
                   f"{_step(candidate['step'])}: {candidate['strength_deg']:.0f}°"
                   + ("" if candidate.get("p_value") is None else
                      f", p = {candidate['p_value']:.2g}")
                   + f"; {candidate['reason'] or 'accepted'}", planes])
    table = _table(["paper's form", "window (±2σ)", "this run's forms overlapping it",
                    "strongest candidate in the window", "clear turns per plane there"], rows)
    nulls = record.get("nulls") or {}
    tail = f"All forms of this run: {', '.join(_form_cell(f) for f in record['forms']) or 'none'}"
    if nulls:
      tail += "; null paths with a form: " + ", ".join(
          f"{kind} {r['num_with_form']} of {r['num_paths']}" for kind, r in sorted(nulls.items()))
    return table + "\n\n" + tail + "."
  rows, matched = [], set()
  for target in paper:
    near = min(ours, key=lambda s: abs(np.log1p(s) - np.log1p(target))) if ours else None
    matched.add(near)
    rows.append([_step(target), "–" if near is None else _step(near)])
  table = _table(["paper's form", "this run's nearest form"], rows)
  if ours and set(ours) <= matched:
    return table
  return table + f"\n\nAll forms of this run: {', '.join(_step(s) for s in ours) or 'none'}."


def _run_test_loss(run_dir: str):
  """(steps [E], per-position test loss [E, K], mean test loss [E]) of the run's training-loop
  evaluations (``metrics.csv``, split "eval", ``loss_per_position``), or None without them."""
  table = files.read_csv_if_present(run_dir, files.METRICS_CSV)
  if table is None or "loss_per_position" not in table or "split" not in table:
    return None
  rows = [i for i, (split, cell) in enumerate(zip(table["split"], table["loss_per_position"]))
          if split == "eval" and isinstance(cell, str) and cell.startswith("[")]
  if not rows:
    return None
  per_position = np.array([json.loads(table["loss_per_position"][i]) for i in rows], np.float64)
  return (table["step"][rows], per_position,
          np.asarray(table["loss"], np.float64)[rows] if "loss" in table else per_position.mean(1))


def position_loss_table(run_dir: str, reference_dir: str, step: int = 500_000,
                        positions: int = 8) -> str:
  """Test loss at each context position at ``step`` (MSE; last row: the mean over positions).

  Both columns are a training loop's evaluation on sequences of the training distribution: the
  run's from ``metrics.csv`` (split "eval": ``loss_per_position``, ``loss``), the reference's from
  ``evals.csv`` (``test_loss_position_k``, ``test_loss``). The reference's ``loss_position_k``,
  a figure notebook's evaluation on sequences with less noise, is not comparable and not shown.
  """
  header, columns = ["position"], []
  ours = _run_test_loss(run_dir)
  if ours is not None and ours[1].shape[1] >= positions:
    i = nearest(ours[0], step)
    header.append(f"jaxdev test loss (metrics.csv, step {_step(ours[0][i])})")
    columns.append(list(ours[1][i, :positions]) + [ours[2][i]])
  ref = files.read_csv_if_present(reference_dir, "evals.csv")
  if ref is not None and "test_loss_position_1" in ref:
    j = nearest(ref["step"], step)
    header.append(f"reference test_loss_position_k (evals.csv, step {_step(ref['step'][j])})")
    columns.append([ref[f"test_loss_position_{k}"][j] for k in range(1, positions + 1)]
                   + [ref["test_loss"][j] if "test_loss" in ref else np.nan])
  labels = [str(k + 1) for k in range(positions)] + ["mean"]
  rows = [[label] + [_fmt(c[k], 3) for c in columns] for k, label in enumerate(labels)]
  return _table(header, rows)


def layernorm_table(run_dir: str, reference_dir: str, steps=(0, 106_000, 500_000),
                    name: str = "ln_final") -> str:
  """Mean of LayerNorm ``name``'s weight (the LR4 collapse) at ``steps``."""
  ours = files.read_csv_if_present(run_dir, files.INDICATORS_CSV)
  ref = files.read_csv_if_present(reference_dir, "layernorm.csv")
  if ref is not None:
    keep = ref["layernorm"] == name
    ref = {k: v[keep] for k, v in ref.items()}
  column = f"layernorm_{name}_weight_mean"
  rows = []
  for target in steps:
    row = [_step(target)]
    for table, key in ((ours, column), (ref, "weight_mean")):
      if table is None or key not in table or not len(table["step"]):
        row.append("–")
      else:
        i = nearest(table["step"], target)
        row.append(f"{_fmt(table[key][i], 3)} (step {_step(table['step'][i])})")
    rows.append(row)
  return _table(["step", f"jaxdev {name} weight mean", "reference"], rows)


def hessian_table(run_dir: str, reference_dir: str, steps=reference.LLC_STEPS) -> str:
  """Hessian trace (and top eigenvalue) at ``steps`` where the run has it."""
  ours = files.read_csv_if_present(run_dir, files.INDICATORS_CSV)
  ref = files.read_csv_if_present(reference_dir, "hessian.csv")
  if ours is not None and "hessian_trace" in ours:
    ok = np.isfinite(ours["hessian_trace"])
    ours = {k: v[ok] for k, v in ours.items()} if ok.any() else None
  else:
    ours = None
  rows = []
  for target in steps:
    row = [_step(target)]
    for table in (ours, ref):
      if table is None:
        row.append("–")
      else:
        i = nearest(table["step"], target)
        row.append(f"{_fmt(table['hessian_trace'][i])} / {_fmt(table['eig_1'][i])} "
                   f"(step {_step(table['step'][i])})")
    rows.append(row)
  return _table(["step", "jaxdev trace / top eigenvalue", "reference"], rows)


def check_sweeps(run_dir: str) -> list[str]:
  """Names of the check sweeps published beside the main one (``llc_NAME.csv``)."""
  return sorted(n[4:-4] for n in os.listdir(run_dir)
                if n.startswith("llc_") and n.endswith(".csv"))


def reduction_table(run_dir: str, reference_dir: str, check: str) -> str:
  """At each checkpoint of check sweep ``check``: the main sweep's LLC, the check's after each
  published number of draws and after all of them, and the reference's."""
  ours = files.read_csv(os.path.join(run_dir, files.LLC_CSV))
  table = files.read_csv(os.path.join(run_dir, files.check_csv(check)))
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  firsts = sorted(int(n[len("llc_mean_first_"):]) for n in table
                  if n.startswith("llc_mean_first_"))
  header = ["checkpoint", "main sweep"] + [f"{check}, first {k:,} draws" for k in firsts]
  header += [f"{check}, all {int(table['num_draws'][0]):,}"] + (["reference"] if ref is not None
                                                                  else [])
  rows = []
  for i, step in enumerate(table["step"]):
    j = int(np.flatnonzero(ours["step"] == step)[0]) if step in ours["step"] else None
    row = [_step(step), "–" if j is None else f"{_fmt(ours['llc_mean'][j])} ± "
           f"{_fmt(ours['llc_std'][j])}"]
    row += [f"{_fmt(table[f'llc_mean_first_{k}'][i])} ± {_fmt(table[f'llc_std_first_{k}'][i])}"
            for k in firsts]
    row.append(f"{_fmt(table['llc_mean'][i])} ± {_fmt(table['llc_std'][i])}")
    if ref is not None:
      k = nearest(ref["step"], step)
      row.append(f"{_fmt(ref['llc_mean'][k])} ± {_fmt(ref['llc_chain_std'][k])} "
                 f"(step {_step(ref['step'][k])})")
    rows.append(row)
  return _table(header, rows)


def position_llc_table(run_dir: str, reference_dir: str, check: str) -> str | None:
  """Per-position LLCs of check sweep ``check`` (``llc_position_k`` of ``llc_CHECK.csv``) beside
  the reference's ``llc_position_k`` at its nearest step; None when the check has none."""
  table = files.read_csv(os.path.join(run_dir, files.check_csv(check)))
  positions = sorted(int(n[len("llc_position_"):]) for n in table
                     if n.startswith("llc_position_") and not n.endswith("_std"))
  if not positions:
    return None
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  has_ref = ref is not None and f"llc_position_{positions[0]}" in ref
  header = ["checkpoint", "k"] + [f"{check} (± std over chains)"] + (
      ["reference", "difference"] if has_ref else [])
  rows = []
  for i, step in enumerate(table["step"]):
    j = nearest(ref["step"], step) if has_ref else None
    for k in positions:
      ours = table[f"llc_position_{k}"][i]
      row = [_step(step) if k == positions[0] else "", str(k),
             f"{_fmt(ours)} ± {_fmt(table[f'llc_position_{k}_std'][i])}"]
      if has_ref:
        theirs = ref[f"llc_position_{k}"][j]
        row += [f"{_fmt(theirs)} (step {_step(ref['step'][j])})", _fmt(ours - theirs)]
      rows.append(row)
  return _table(header, rows)


def plot_llc_comparison(run_dir: str, reference_dir: str, path: str) -> str:
  """Draws the run's LLC (main sweep ± chain std, and every check sweep) beside the reference's
  curve, against log step, into ``path`` (a PNG); returns ``path``. The figure is made without
  pyplot, so no matplotlib backend is chosen or changed."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  ours = files.read_csv(os.path.join(run_dir, files.LLC_CSV))
  ref = files.read_csv_if_present(reference_dir, "llc.csv")
  fig = Figure(figsize=(8, 4.5))
  ax = fig.subplots()
  if ref is not None:
    ax.plot(ref["step"] + 1, ref["llc_mean"], color="0.3", lw=1.5,
            label="reference (authors' seed 0: 10 × 5,000 draws, batch 1,024)")
  ax.errorbar(ours["step"] + 1, ours["llc_mean"], yerr=ours["llc_std"], fmt="o", ms=2.5,
              color="C0", elinewidth=0.6, label="this run, main sweep ± chain std")
  for k, name in enumerate(check_sweeps(run_dir)):
    check = files.read_csv(os.path.join(run_dir, files.check_csv(name)))
    ax.errorbar(check["step"] + 1, check["llc_mean"], yerr=check["llc_std"], fmt="s", ms=5,
                mfc="none", color=f"C{k + 1}", label=f"this run, {name} "
                f"({int(check['num_draws'][0]):,} draws)")
  ax.set_xscale("log")
  ax.set_xlabel("training step + 1")
  ax.set_ylabel("LLC")
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  rundir.atomic_save_figure(fig, path, dpi=120)
  return path


def comparison_markdown(run_dir: str, reference_dir: str) -> str:
  """Every table above, with headings."""
  parts = [("LLC", llc_table(run_dir, reference_dir))]
  difference = difference_table(run_dir, reference_dir)
  if difference is not None:
    parts.append(("LLC minus the reference's, all matching checkpoints", difference))
  checks = check_sweeps(run_dir)
  parts += [(f"The sampler's reduction against {name}",
             reduction_table(run_dir, reference_dir, name)) for name in checks]
  for name in checks:
    table = position_llc_table(run_dir, reference_dir, name)
    if table is not None:
      parts.append((f"Per-position LLCs of {name}", table))
  parts.append(("Stage boundaries", stages_table(run_dir, reference_dir)))
  for name in checks:
    table = check_stages_table(run_dir, reference_dir, name)
    if table is not None:
      parts.append((f"The main sweep minus {name}, by step range",
                     reduction_summary_table(run_dir, name)))
      parts.append((f"{name} minus the reference's, all matching checkpoints",
                     difference_table(run_dir, reference_dir, check=name)))
      parts.append((f"Stage boundaries of {name} alone", table))
  parts += [("Essential-dynamics forms", forms_table(run_dir)),
            ("Loss per position at the end", position_loss_table(run_dir, reference_dir)),
            ("Final LayerNorm weight", layernorm_table(run_dir, reference_dir)),
            ("Hessian", hessian_table(run_dir, reference_dir))]
  return "\n\n".join(f"### {title}\n\n{table}" for title, table in parts) + "\n"


def write_comparison(run_dir: str, reference_dir: str) -> list[str]:
  """Writes ``comparison.md`` (:func:`comparison_markdown`) into the published directory
  ``run_dir`` from its files alone and, where it publishes figures (a ``figures/`` folder, which
  :func:`jaxdev.report.artifacts.export_run` makes), ``figures/llc_vs_reference.png``
  (:func:`plot_llc_comparison`); returns the paths written.

  Raises:
    UserError: ``reference_dir`` does not exist, or ``run_dir`` has no readable ``llc.csv``.
  """
  if not os.path.isdir(reference_dir):
    raise errors.UserError(f"reference directory {reference_dir} does not exist")
  files.read_csv(os.path.join(run_dir, files.LLC_CSV))  # the one file every table needs
  path = os.path.join(run_dir, files.COMPARISON_MD)
  rundir.atomic_write_text(path, comparison_markdown(run_dir, reference_dir))
  written = [path]
  if os.path.isdir(os.path.join(run_dir, files.FIGURES)):
    written.append(plot_llc_comparison(
        run_dir, reference_dir, os.path.join(run_dir, files.FIGURES, files.COMPARISON_PNG)))
  return written
