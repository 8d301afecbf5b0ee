"""When the language model's circuits form, read off the indicators (docs/methods.md,
"Indicators"), and where that falls among the stages of the LLC curve.

The paper's LM3 and LM4 are named after structure: first-layer previous-token heads, then
second-layer induction heads whose prefix-matching score rises while the ICL score falls. This
module turns the per-head indicator curves (``indicators/summary.csv`` columns
``previous_token_score_B{l}H{h}``, ``prefix_matching_score_B{l}H{h}``, ``icl_score``; layers and
heads 1-based) into those events: for each head, the checkpoints between which its score goes
from below ``low`` to above ``high``, and the step of its steepest rise.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class Formation:
  """A score's rise from below ``low`` to above ``high``.

  Attributes:
    name: the indicator column (e.g. ``prefix_matching_score_B2H3``).
    start: the last checkpoint step below ``low`` before ``end``.
    end: the first checkpoint step at or above ``high``.
    steepest: the checkpoint step at the end of the largest rise between consecutive checkpoints
      in [start, end] (per step of training).
    before, after: the score at ``start`` and at the run's last checkpoint.
  """

  name: str
  start: int
  end: int
  steepest: int
  before: float
  after: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def formation(steps, score, *, name: str = "", low: float = 0.1,
              high: float = 0.3) -> Formation | None:
  """The first rise of ``score`` [N] over ``steps`` [N] from below ``low`` to at least ``high``
  (None if the score never reaches ``high`` after being below ``low``). NaN entries are skipped."""
  steps, score = np.asarray(steps, np.int64), np.asarray(score, np.float64)
  keep = np.isfinite(score)
  steps, score = steps[keep], score[keep]
  below = np.flatnonzero(score < low)
  if not below.size:
    return None
  above = np.flatnonzero((score >= high) & (np.arange(len(score)) > below[0]))
  if not above.size:
    return None
  end = int(above[0])
  start = int(below[below < end].max())
  rate = np.diff(score[start:end + 1]) / np.maximum(np.diff(steps[start:end + 1]), 1)
  steepest = start + 1 + int(np.argmax(rate))
  return Formation(name, int(steps[start]), int(steps[end]), int(steps[steepest]),
                   float(score[start]), float(score[-1]))


def _heads(summary: dict, prefix: str, layer: int) -> list[str]:
  pattern = re.compile(rf"{prefix}_B{layer}H(\d+)$")
  return sorted((n for n in summary if pattern.match(n)),
                key=lambda n: int(pattern.match(n).group(1)))


def _at(summary: dict, name: str, step: int) -> float:
  index = int(np.searchsorted(summary["step"], step))
  return float(summary[name][min(index, len(summary["step"]) - 1)])


def induction_milestones(summary: dict, stages=(), *, low: float = 0.1,
                         high: float = 0.3) -> dict:
  """Previous-token heads in layer 1 and induction heads in layer 2, from an indicator summary.

  Args:
    summary: {column: [N] array} with ``step`` (``jaxdev.indicators.run.load_summary``).
    stages: the LLC curve's stages (objects with ``start``, ``end``), to place each formation.
    low, high: the rise counted as a formation (the score below ``low``, then at least ``high``).

  Returns:
    {"previous_token": [Formation dicts of layer-1 heads], "prefix_matching" and
    "induction_score": [of layer-2 heads' prefix-matching and induction scores], "induction":
    both lists together, "icl": the ICL score at the first induction head's start and end
    (and its change), "boundaries": for each induction formation, the stage boundary nearest its
    steepest step and whether it lies inside [start, end], "order": whether some layer-1
    previous-token head formed (end) no later than the first induction head's end}.
  """
  steps = summary["step"]
  found = {}
  for key, prefix, layer in (("previous_token", "previous_token_score", 1),
                             ("prefix_matching", "prefix_matching_score", 2),
                             ("induction_score", "induction_score", 2)):
    found[key] = [f for f in (formation(steps, summary[n], name=n, low=low, high=high)
                              for n in _heads(summary, prefix, layer)) if f is not None]
  # A layer-2 head counts as an induction head by either score (the repeated-block score sees
  # heads that match on more than one token, which the paper's single A ... B ... A does not).
  found["induction"] = found["prefix_matching"] + found["induction_score"]
  out = {k: [f.to_dict() for f in v] for k, v in found.items()}
  out.update(icl=None, boundaries=[], order=None, low=low, high=high)
  if found["induction"]:
    first = min(found["induction"], key=lambda f: f.end)
    if "icl_score" in summary:
      before, after = _at(summary, "icl_score", first.start), _at(summary, "icl_score", first.end)
      out["icl"] = {"start": first.start, "end": first.end, "before": before, "after": after,
                    "change": after - before}
    out["order"] = any(f.end <= first.end for f in found["previous_token"])
    boundaries = [int(s.start) for s in list(stages)[1:]]
    for f in found["induction"]:
      if boundaries:
        nearest = min(boundaries, key=lambda b: abs(b - f.steepest))
        out["boundaries"].append({"head": f.name, "boundary": nearest,
                                  "inside": bool(f.start <= nearest <= f.end)})
  return out


def format_milestones(result: dict) -> str:
  """Printable lines for :func:`induction_milestones`."""
  lines = []
  for key, what in (("previous_token", "layer-1 previous-token head"),
                    ("prefix_matching", "layer-2 induction head (prefix matching)"),
                    ("induction_score", "layer-2 induction head (repeated-block score)")):
    if key not in result:
      continue
    for f in result[key]:
      lines.append(f"{what} {f['name'].rsplit('_', 1)[-1]}: {f['before']:.2f} at step "
                   f"{f['start']} -> ≥ {result['high']:g} by {f['end']} (steepest at "
                   f"{f['steepest']}; {f['after']:.2f} at the end)")
    if not result[key]:
      lines.append(f"no {what} rose from < {result['low']:g} to ≥ {result['high']:g}")
  if result["icl"]:
    icl = result["icl"]
    lines.append(f"ICL score over the first induction formation ({icl['start']}–{icl['end']}): "
                 f"{icl['before']:+.3f} -> {icl['after']:+.3f} nats")
  for b in result["boundaries"]:
    lines.append(f"{b['head'].rsplit('_', 1)[-1]}: nearest LLC stage boundary at step "
                 f"{b['boundary']} ({'inside' if b['inside'] else 'outside'} the formation)")
  return "\n".join(lines)
