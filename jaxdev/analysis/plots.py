"""Figures: the LLC curve with stages (paper Figure 1) and essential dynamics (Figure 2).

Every figure is a ``matplotlib.figure.Figure`` made without pyplot: importing or calling this
module chooses no backend and registers no figure, so a notebook's backend stays the user's.
``fig.savefig(path)`` writes one; a notebook displays the returned figure.
"""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib import colormaps
from matplotlib import patches
from matplotlib.figure import Figure

from jaxdev.analysis import geometry

STAGE_COLOURS = {"A": "#d9ead3", "B": "#f4cccc"}


def figure(nrows: int = 1, ncols: int = 1, *, figsize, squeeze: bool = True, layout=None,
           **subplot_kw):
  """(Figure, axes) as ``pyplot.subplots`` returns them, without pyplot."""
  fig = Figure(figsize=figsize, layout=layout)
  return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)


def shade_stages(ax, stages, *, label: bool = False):
  """Shades stages on an axis whose x is training step + 1 (log scale): A green, B red.

  Args:
    ax: a matplotlib Axes.
    stages: objects with ``start``, ``end`` (training steps) and ``kind`` ("A" or "B"), e.g. the
      ``stages`` of a StageAnalysis or the dicts of ``stages.json`` turned into Stage objects.
    label: also write the stage names (A1, A2, B3, …) at the top of the axis.
  """
  for i, stage in enumerate(stages):
    ax.axvspan(max(stage.start, 1e-1) + 1, stage.end + 1, color=STAGE_COLOURS[stage.kind], alpha=0.6,
               lw=0)
    if i:
      ax.axvline(stage.start + 1, color="0.4", lw=0.8, ls="--")
    if label:
      mid = np.sqrt((stage.start + 1) * (stage.end + 1))
      ax.text(mid, 0.97, f"{stage.kind}{i + 1}", transform=ax.get_xaxis_transform(),
              ha="center", va="top", fontsize=9)


RULE_MARKERS = {"sign change": ("v", "C3"), "plateau": ("D", "C4")}


def mark_milestones(ax, milestones, *, y=None):
  """Vertical lines at the milestones, with a marker per rule (▼ sign change, ◆ plateau) at
  height ``y`` (data units; default: the top of the axis) and the 16–84% location band."""
  for m in milestones:
    marker, colour = RULE_MARKERS[m.rule]
    ax.axvline(m.step + 1, color=colour, ls="--", lw=0.9)
    if m.step_low is not None and m.step_high is not None and m.step_high > m.step_low:
      ax.axvspan(m.step_low + 1, m.step_high + 1, color=colour, alpha=0.15, lw=0)
    if y is None:
      ax.plot(m.step + 1, 0.99, marker, color=colour, ms=7, transform=ax.get_xaxis_transform(),
              clip_on=False)
    else:
      ax.plot(m.step + 1, y, marker, color=colour, ms=7)


def plot_llc(steps, llc_mean, llc_std, *, loss_steps=None, test_loss=None, analysis=None,
             llc_se=None, excluded_steps=None, title: str = "LLC over training"):
  """LLC against log step: estimates ± chain std (and ± standard error), the GP mean ± 2 posterior
  std, stages shaded (A green, B red), milestones marked by rule; test loss beside it.
  Checkpoints in ``excluded_steps`` (no estimate) are marked by red crosses on the bottom axis.

  The x axis is step + 1 on a log scale (so step 0 shows). ``analysis`` is a StageAnalysis.
  """
  fig, (ax, ax_loss) = figure(1, 2, figsize=(12, 4.2))
  x = np.asarray(steps) + 1
  if analysis is not None:
    shade_stages(ax, analysis.stages, label=True)
    grid = analysis.grid_steps + 1
    ax.fill_between(grid, analysis.mean - 2 * analysis.std, analysis.mean + 2 * analysis.std,
                    color="k", alpha=0.2, lw=0, label="GP mean ± 2 std")
    ax.plot(grid, analysis.mean, color="k", lw=1, alpha=0.8)
    mark_milestones(ax, analysis.milestones)
  ax.errorbar(x, llc_mean, yerr=llc_std, fmt="o", ms=3, lw=0.6, capsize=1.5, color="C0",
              alpha=0.5, label="LLC ± std over chains")
  if llc_se is not None:
    ax.errorbar(x, llc_mean, yerr=llc_se, fmt="none", lw=1.5, color="C1",
                label="± standard error")
  if excluded_steps is not None and len(excluded_steps):
    ax.plot(np.asarray(excluded_steps) + 1, np.zeros(len(excluded_steps)), "x", color="red",
            ms=7, mew=1.5, clip_on=False, transform=ax.get_xaxis_transform(),
            label="excluded (too few surviving chains)")
  ax.set_xscale("log")
  ax.set_xlabel("training step + 1")
  ax.set_ylabel("estimated LLC λ̂")
  ax.set_title(title)
  ax.legend(loc="lower right", fontsize=8)
  if test_loss is not None:
    if analysis is not None:
      shade_stages(ax_loss, analysis.stages)
    ax_loss.plot(np.asarray(loss_steps) + 1, test_loss, "o-", ms=3, color="C3")
    ax_loss.set_xscale("log")
    ax_loss.set_xlabel("training step + 1")
    ax_loss.set_ylabel("test loss")
    ax_loss.set_title("Test loss")
  else:
    ax_loss.set_visible(False)
  fig.tight_layout()
  return fig


def plot_restricted(curves, *, stages=(), full=None, title: str = "Weight-restricted LLCs"):
  """Weight-restricted LLC curves (e.g. one per attention head) against log step, stages shaded.

  Heads and other restrictions (layers, masks) are drawn on panels of their own when both are
  given, since a layer's LLC is many times a head's.

  Args:
    curves: {label: (steps [K], llc_mean [K], llc_std [K])}. Labels ``head:L.H`` are coloured
      by layer L (one colour map per layer, heads told apart by shade); others take the cycle.
    stages: the stages of the full LLC curve (see :func:`shade_stages`).
    full: optional (steps, llc_mean) of the unrestricted sweep, drawn on a second y axis of the
      first panel.
    title: the first panel's title.
  """
  heads = {k: v for k, v in curves.items() if k.startswith("head:")}
  others = {k: v for k, v in curves.items() if not k.startswith("head:")}
  groups = [g for g in (heads, others) if g] or [curves]
  fig, axes = figure(len(groups), 1, figsize=(9, 4.6 if len(groups) == 1 else 7.2),
                     squeeze=False, sharex=True)
  layer_maps = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
  by_layer = {}
  for label in heads:
    by_layer.setdefault(int(label[5:].split(".")[0]), []).append(label)
  for k, (ax, group) in enumerate(zip(axes[:, 0], groups)):
    shade_stages(ax, stages, label=k == 0)
    for i, (label, (steps, mean, std)) in enumerate(group.items()):
      colour = f"C{i % 10}"
      if label in heads:
        layer = int(label[5:].split(".")[0])
        shade = 0.45 + 0.5 * by_layer[layer].index(label) / max(len(by_layer[layer]) - 1, 1)
        colour = colormaps[layer_maps[layer % len(layer_maps)]](shade)
      x = np.asarray(steps) + 1
      ax.plot(x, mean, "o-", ms=2.5, lw=1.2, color=colour, label=label)
      ax.fill_between(x, np.asarray(mean) - np.asarray(std), np.asarray(mean) + np.asarray(std),
                      color=colour, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_ylabel("restricted LLC λ̂ (± std over chains)")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
  if full is not None:
    twin = axes[0, 0].twinx()
    twin.plot(np.asarray(full[0]) + 1, full[1], color="k", lw=1, ls=":", label="all weights")
    twin.set_ylabel("LLC of all weights (dotted)")
  axes[-1, 0].set_xlabel("training step + 1")
  axes[0, 0].set_title(title)
  fig.tight_layout()
  return fig


def plot_observables(steps, llc, llc_std, susceptibility, *, llc_mean=None, stages=(),
                     name: str = "positions", title: str = "", max_curves: int = 12):
  """The LLC split over observables (e.g. per-position LLCs) and their susceptibilities against
  log step, stages shaded.

  Args:
    steps: [N] checkpoint steps.
    llc: [N, O] the observables' LLCs (``observable_llc`` of the records).
    llc_std: [N, O] their std over chains.
    susceptibility: [N, O] χ = −nβ·Cov(φ, L).
    llc_mean: optional [N] LLC of the whole loss, drawn dotted (for positions: the mean of the
      curves).
    stages: the stages of the LLC curve (see :func:`shade_stages`).
    name: the observables' name ("positions": curves labelled k = 1..O).
    title: the run, for the titles.
    max_curves: with more observables, evenly spaced ones are drawn (the first and last among
      them).
  """
  llc, llc_std, susceptibility = (np.asarray(a, float) for a in (llc, llc_std, susceptibility))
  num = llc.shape[1]
  chosen = np.unique(np.linspace(0, num - 1, min(num, max_curves)).round().astype(int))
  fig, (ax, ax_chi) = figure(1, 2, figsize=(13, 4.6))
  x = np.asarray(steps) + 1
  for a in (ax, ax_chi):
    shade_stages(a, stages, label=a is ax)
  for i, o in enumerate(chosen):
    colour = colormaps["viridis"](i / max(len(chosen) - 1, 1))
    label = f"k = {o + 1}" if name == "positions" else f"{name}[{o}]"
    ax.plot(x, llc[:, o], "-", lw=1.2, color=colour, label=label)
    ax.fill_between(x, llc[:, o] - llc_std[:, o], llc[:, o] + llc_std[:, o], color=colour,
                    alpha=0.12, lw=0)
    ax_chi.plot(x, susceptibility[:, o], "-", lw=1.2, color=colour, label=label)
  if llc_mean is not None:
    ax.plot(x, llc_mean, "k:", lw=1.2, label="LLC of the loss")
  what = "per-position" if name == "positions" else name
  for a in (ax, ax_chi):
    a.set_xscale("log")
    a.set_xlabel("training step + 1")
  ax.set_ylabel(f"{what} LLC (± std over chains)")
  ax.set_title(f"{what} LLCs{' (' + title + ')' if title else ''}"
               + ("" if len(chosen) == num else f": {len(chosen)} of {num}"))
  ax_chi.set_ylabel("susceptibility χ = −nβ Cov(φ, L)")
  ax_chi.set_title(f"{what} susceptibilities")
  ax_chi.axhline(0.0, color="k", lw=0.6)
  ax.legend(loc="upper left", fontsize=7, ncol=2)
  fig.tight_layout()
  return fig


def plot_slope(analysis):
  """The GP slope d λ̂ / d ln(step+1) ± 2 posterior std, the stretches where it is significant
  (|slope| ≥ z_threshold std: rising green, falling red), and the milestones by rule."""
  fig, (ax, ax_z) = figure(2, 1, figsize=(7, 5.5), sharex=True,
                            gridspec_kw={"height_ratios": [2, 1]})
  grid = analysis.grid_steps + 1
  z = analysis.z
  for a in (ax, ax_z):
    a.fill_between(grid, 0, 1, where=z >= analysis.z_threshold, color=STAGE_COLOURS["A"],
                   transform=a.get_xaxis_transform(), lw=0)
    a.fill_between(grid, 0, 1, where=z <= -analysis.z_threshold, color=STAGE_COLOURS["B"],
                   transform=a.get_xaxis_transform(), lw=0)
    a.axhline(0, color="k", lw=0.6)
    mark_milestones(a, analysis.milestones)
  ax.fill_between(grid, analysis.slope - 2 * analysis.slope_std,
                  analysis.slope + 2 * analysis.slope_std, color="C0", alpha=0.3, lw=0,
                  label="± 2 posterior std")
  ax.plot(grid, analysis.slope, color="C0", label="GP slope")
  ax.set_yscale("symlog", linthresh=max(1.0, float(np.median(np.abs(analysis.slope)))))
  ax.set_ylabel("d λ̂ / d ln(step+1)")
  ax.plot([], [], "v", color="C3", label="sign change")
  ax.plot([], [], "D", color="C4", label="plateau")
  ax.legend(fontsize=7, loc="lower left")
  ax.set_title("Stage milestones (shaded: slope significant at "
               f"{analysis.z_threshold:g} posterior std)")
  ax_z.plot(grid, z, color="C0")
  for sign in (1, -1):
    ax_z.axhline(sign * analysis.z_threshold, color="0.5", ls=":", lw=1)
  ax_z.set_yscale("symlog", linthresh=analysis.z_threshold)
  ax_z.set_ylabel("slope / std")
  ax_z.set_xscale("log")
  ax_z.set_xlabel("training step + 1")
  fig.tight_layout()
  return fig


def plot_ed(scores, steps, *, forms=(), stages=(), explained=None, circles_every: int = 0,
            candidates=(), kinks=()):
  """PC-pair plots of the smoothed trajectory coloured by stage, with evolutes and forms.

  Accepted forms are black stars; candidates that were not accepted (``candidates``, form
  objects with ``accepted`` False) are open grey stars; the trajectory at the σ schedule's kinks
  (``kinks``: indices) is marked with red crosses.
  """
  k = scores.shape[1]
  pairs = list(itertools.combinations(range(k), 2))
  fig, axes = figure(1, len(pairs), figsize=(4.6 * len(pairs), 4.4), squeeze=False)
  steps = np.asarray(steps)
  stage_of = np.zeros(len(steps), int)
  for i, stage in enumerate(stages):
    stage_of[(steps >= stage.start) & (steps <= stage.end)] = i
  colours = colormaps["tab10"](np.arange(max(len(stages), 1)) % 10)
  for ax, (i, j) in zip(axes[0], pairs):
    curve = scores[:, [i, j]]
    for s in range(max(len(stages), 1)):
      mask = stage_of == s
      label = f"stage {s + 1} ({stages[s].kind})" if stages else None
      ax.plot(curve[mask, 0], curve[mask, 1], ".", ms=4, color=colours[s], label=label)
    ax.plot(curve[:, 0], curve[:, 1], color="0.6", lw=0.5)
    osc = geometry.osculating_circles(curve)
    scale = np.ptp(curve, axis=0).max()
    ok = np.isfinite(osc.radii) & (osc.radii < 0.2 * scale)
    ax.plot(osc.centres[ok, 0], osc.centres[ok, 1], ",", color="C4", alpha=0.5)
    if circles_every:
      for t in range(1, len(curve) - 1, circles_every):
        if ok[t]:
          ax.add_patch(patches.Circle(osc.centres[t], osc.radii[t], fill=False, lw=0.4,
                                     alpha=0.4))
    for form in candidates:
      if not form.accepted and np.all(np.isfinite(form.centre[[i, j]])):
        ax.plot(form.centre[i], form.centre[j], "*", ms=10, mfc="none", mec="0.4")
    for n, form in enumerate(forms):
      ax.plot(form.centre[i], form.centre[j], "k*", ms=12)
      ax.annotate(f"form {n + 1}\nstep {steps[form.index]}", (form.centre[i], form.centre[j]),
                  fontsize=8, xytext=(5, 5), textcoords="offset points")
    for n, t in enumerate(kinks):
      ax.plot(*curve[int(t)], "x", color="C3", ms=8, mew=1.5,
              label="σ kink" if n == 0 else None)
    ax.plot(*curve[0], "go", ms=6, label="start")
    ax.plot(*curve[-1], "rs", ms=6, label="end")
    xl = f"PC{i + 1}" + (f" ({100 * explained[i]:.0f}%)" if explained is not None else "")
    yl = f"PC{j + 1}" + (f" ({100 * explained[j]:.0f}%)" if explained is not None else "")
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_aspect("equal", adjustable="datalim")
  axes[0][0].legend(fontsize=7, loc="best", markerscale=1)
  fig.suptitle("Essential dynamics: smoothed PC trajectory (purple: evolute, ★: forms, "
               "☆: rejected candidates, ×: σ kinks)")
  fig.tight_layout()
  return fig


def plot_scores(steps, raw, smoothed, forms=()):
  """PC scores over (log) training step, raw and smoothed, with forms marked."""
  k = raw.shape[1]
  fig, axes = figure(k, 1, figsize=(7, 2.2 * k), sharex=True)
  x = np.asarray(steps) + 1
  for i, ax in enumerate(np.atleast_1d(axes)):
    ax.plot(x, raw[:, i], color="0.7", lw=0.8, label="raw")
    ax.plot(x, smoothed[:, i], color=f"C{i}", lw=1.5, label="smoothed")
    for form in forms:
      ax.axvline(x[form.index], color="k", ls="--", lw=0.8)
    ax.set_ylabel(f"PC{i + 1}")
    ax.set_xscale("log")
  np.atleast_1d(axes)[0].legend(fontsize=8)
  np.atleast_1d(axes)[-1].set_xlabel("training step + 1")
  fig.tight_layout()
  return fig


def plot_form_potentials(steps, scores, forms):
  """‖f(t) − f*‖² for each form over (log) step."""
  fig, ax = figure(figsize=(7, 3.5))
  x = np.asarray(steps) + 1
  for n, form in enumerate(forms):
    ax.plot(x, geometry.form_potential(scores, form.centre), label=f"form {n + 1} (step {steps[form.index]})")
    ax.axvline(x[form.index], color=f"C{n}", ls="--", lw=0.8)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("training step + 1")
  ax.set_ylabel("form potential ‖f(t) − f*‖²")
  if forms:
    ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, "no forms found", transform=ax.transAxes, ha="center")
  fig.tight_layout()
  return fig
