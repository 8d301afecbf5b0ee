"""Indicator panels over training (paper Figures 3–5 and appendices C–D): each indicator against
log step, with the run's stages shaded and named as in the LLC figure. Figures are made without
pyplot, as :mod:`jaxdev.analysis.plots`' are."""

from __future__ import annotations

import math

import numpy as np

from jaxdev.analysis import plots


def plot_panels(steps, panels, *, stages=(), title: str = "", columns: int = 3):
  """A grid of indicator panels sharing the x axis (training step + 1, log scale).

  Args:
    steps: [N] checkpoint steps.
    panels: a list of ``(panel title, {line label: [N] values}, {reference label: value})``; a
      reference is drawn as a dotted horizontal line (e.g. the bigram entropy).
    stages: Stage-like objects (``start``, ``end``, ``kind``) to shade and name.
    title: the figure title.
    columns: panels per row.

  Returns:
    A ``matplotlib.figure.Figure`` (made without pyplot; ``fig.savefig(path)`` writes it).
  """
  rows = max(1, math.ceil(len(panels) / columns))
  fig, axes = plots.figure(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False,
                          layout="constrained")  # room for the suptitle above the panel titles
  x = np.asarray(steps, np.float64) + 1
  for ax, (name, lines, references) in zip(axes.ravel(), panels):
    plots.shade_stages(ax, stages, label=True)
    for label, values in lines.items():
      ax.plot(x, np.asarray(values, np.float64), "o-", ms=2.5, lw=1, label=label)
    for label, value in (references or {}).items():
      ax.axhline(value, color="k", ls=":", lw=1, label=label)
    ax.set_xscale("log")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("training step + 1")
    if 1 < len(lines) + len(references or {}) <= 12:
      ax.legend(fontsize=6, loc="best")
  for ax in axes.ravel()[len(panels):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  return fig


def _lines(summary: dict, names) -> dict:
  return {n: summary[n] for n in names if n in summary}


def _matching(summary: dict, prefix: str, suffix: str = "") -> list:
  return sorted(n for n in summary if n.startswith(prefix) and n.endswith(suffix))


def regression_panels(summary: dict) -> list:
  """Panels of the regression indicators present in ``summary`` (column -> [N] values)."""
  positions = sorted(_matching(summary, "loss_position_"), key=lambda n: int(n.split("_")[-1]))
  positions = [p for p in positions if p.split("_")[-1].isdigit()]
  panels = [
      ("loss by position ℓ_k", _lines(summary, positions), {}),
      ("ICL scores", _lines(summary, ["icl_1_4", "icl_4_8"]), {}),
      ("prediction norm E[ŷ²]", _lines(summary, ["prediction_norm"]), {}),
      ("MSE to baselines", _lines(summary, _matching(summary, "mse_to_")), {}),
      ("OOD inputs ×g (MSE / g²)", _lines(summary, _matching(summary, "ood_inputs_", "_normalized")), {}),
      ("OOD tasks ×g (MSE / g²)", _lines(summary, _matching(summary, "ood_tasks_", "_normalized")), {}),
      ("token embedding singular values", _lines(summary, _matching(summary, "token_embedding_sv_")), {}),
      ("positional embedding singular values",
       _lines(summary, _matching(summary, "positional_embedding_sv_")), {}),
      ("token / positional subspace overlap", _lines(summary, ["embedding_overlap"]), {}),
      ("LayerNorm weights |w| < 0.1", _lines(summary, _matching(summary, "layernorm_", "_weight_frac_small")), {}),
      ("LayerNorm weight mean", _lines(summary, _matching(summary, "layernorm_", "_weight_mean")), {}),
      ("effective unembedding", _lines(summary, ["unembed_effective_weight_norm",
                                                 "unembed_effective_weight_frac_small"]), {}),
      ("attention entropy (x / y queries)", _lines(summary, _matching(summary, "attention_entropy_B")), {}),
      ("attention variability", _lines(summary, _matching(summary, "attention_variability_B")), {}),
      ("previous-token attention", _lines(summary, _matching(summary, "attention_previous_B")), {}),
      ("weight norm", _lines(summary, ["weight_norm"]), {}),
  ]
  return [p for p in panels if p[1]] + hessian_panels(summary)


def hessian_panels(summary: dict) -> list:
  """Hessian trace and top eigenvalues, if present."""
  panels = [("Hessian trace (Hutchinson)", _lines(summary, ["hessian_trace"]), {}),
            ("top Hessian eigenvalues", _lines(summary, _matching(summary, "eig_")), {})]
  return [p for p in panels if p[1]]


def language_panels(summary: dict, constants: dict) -> list:
  """Panels of the language indicators present in ``summary``."""
  at = sorted({n for n in _matching(summary, "loss_at_") if not n.endswith("_pos_ablated")},
              key=lambda n: int(n.split("_")[-1]))
  ablated = {f"{n} (pos. ablated)": summary[f"{n}_pos_ablated"] for n in at[::3]}
  panels = [
      ("bigram score", _lines(summary, ["bigram_score"]),
       {"bigram entropy": constants["bigram_entropy"]} if "bigram_entropy" in constants else {}),
      ("n-gram scores", _lines(summary, _matching(summary, "ngram_score_")), {}),
      ("loss by position, positional embedding ablated",
       {**_lines(summary, at[::3]), **ablated}, {}),
      ("ICL score (late − early positions)", _lines(summary, ["icl_score", "icl_score_tokens"]), {}),
      ("previous-token score", _lines(summary, _matching(summary, "previous_token_score_B")), {}),
      ("prefix-matching score", _lines(summary, _matching(summary, "prefix_matching_score_B")), {}),
      ("induction score (repeated block)", _lines(summary, _matching(summary, "induction_score_B")), {}),
      ("K-composition (layer 1 → layer 2)", _lines(summary, _matching(summary, "k_composition_B")), {}),
      ("LayerNorm weight mean", _lines(summary, _matching(summary, "layernorm_", "_weight_mean")), {}),
  ]
  return [p for p in panels if p[1]] + hessian_panels(summary)
