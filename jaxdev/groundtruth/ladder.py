"""The ground-truth ladder: deep linear networks from ~10³ to ~10⁶ parameters, each estimated
with the settings :func:`jaxdev.groundtruth.procedure.select_settings` picks, against Aoyagi's
exact λ.

Every rung is the setting of :func:`jaxdev.groundtruth.dln.make` (Lau et al.'s: inputs uniform on
[−10, 10]^{H_0}, noise-free outputs, n examples, nβ = n / ln n, a true parameter with about half
of its matrices cut to a random rank, drawn from the rung's seed); the sampler's step size and
localization come from the procedure under a budget of gradient evaluations, never from a
per-model constant. :func:`estimate` returns one JSON-able dict per rung (``scripts/benchmark.py
groundtruth`` prints them as they finish).
"""

from __future__ import annotations

import time
from typing import Iterator, NamedTuple, Sequence

import jax

from jaxdev import rundir
from jaxdev import sgld
from jaxdev.sgld import precondition
from jaxdev.groundtruth import dln
from jaxdev.groundtruth import procedure


#: The samplers the ladder compares, by name: plain SGLD and RMSProp-SGLD (α 0.99, eps 0.1) with
#: its running mean starting at 0 (devinterp's) or at 1 (Hitchcock & Hoogland's).
PRECONDITIONERS = {"none": None, "rmsprop": sgld.RMSProp(),
                   "rmsprop_from_one": sgld.RMSProp(initial=1.0)}
SAMPLER_NAMES = {"none": "SGLD", "rmsprop": "RMSProp-SGLD",
                 "rmsprop_from_one": "RMSProp-SGLD, V₀ = 1"}


class Rung(NamedTuple):
  """One model of the ladder: its widths (H_0, …, H_L) and the seed of its true parameter."""
  widths: tuple
  seed: int = 0


#: Depth 2 to 10, widths from 10 to 500: from 800 to 1,000,000 parameters.
LADDER = (
    Rung((10, 20, 20, 10)),                      # L = 3, d = 800
    Rung((20, 30, 30, 30, 20)),                  # L = 4, d = 3,000
    Rung((30,) * 11),                            # L = 10, d = 9,000
    Rung((50, 100, 50)),                         # L = 2, d = 10,000
    Rung((100, 150, 150, 100)),                  # L = 3, d = 52,500
    Rung((200, 200, 200, 200)),                  # L = 3, d = 120,000
    Rung((300, 400, 300)),                       # L = 2, d = 240,000
    Rung((500, 500, 500, 500, 500)),             # L = 4, d = 1,000,000
)


def estimate(rung: Rung, *, budget: int, max_budget: int | None = None,
             num_examples: int = 100_000, batch_size: int = 200, num_chains: int = 4,
             preconditioner=None, seed: int = 0) -> dict:
  """Estimates one rung's λ with the procedure's settings; a JSON-able dict.

  Args:
    rung: the model.
    budget: gradient evaluations of the procedure's scale, calibration and first estimate.
    max_budget: ceiling of the evaluations when the estimate's chains are doubled in length
      until they settle (:func:`jaxdev.groundtruth.procedure.estimate_until_settled`); None:
      16 × ``budget``.
    num_examples: n, the dataset size (nβ = n / ln n).
    batch_size: the SGLD minibatch size.
    num_chains: chains of the calibration and of the estimate.
    preconditioner: a name of :data:`PRECONDITIONERS`, None or an :class:`jaxdev.sgld.RMSProp`.
    seed: seeds the procedure's and the estimate's chains.

  Returns:
    widths, depth, num_params, rank, llc_exact, multiplicity, llc_hat, llc_std (over chains,
    ddof 1), llc_sem, rel_error ((λ̂ − λ)/λ), step_size, gamma, num_draws, num_burnin,
    gradient_evaluations, mala, rhat, ess_bulk, seconds, and ``reasons`` (the procedure's); with
    no usable setting, llc_hat is None and ``reasons`` says why.
  """
  start = time.perf_counter()
  if isinstance(preconditioner, str) and preconditioner in PRECONDITIONERS:
    preconditioner = PRECONDITIONERS[preconditioner]
  preconditioner = precondition.resolve_preconditioner(preconditioner)
  name = next((k for k, v in PRECONDITIONERS.items() if v == preconditioner), repr(preconditioner))
  setting = dln.make(rung.widths, seed=rung.seed, num_examples=num_examples)
  selection_key, estimate_key = jax.random.split(jax.random.key(seed))
  selection = procedure.select_settings(dln.loss_fn, setting.params, setting.data, selection_key,
                                        budget=budget, nbeta=setting.nbeta,
                                        batch_size=batch_size, num_chains=num_chains,
                                        preconditioner=preconditioner)
  exact = float(setting.llc)
  record = dict(widths=list(setting.widths), depth=len(setting.widths) - 1,
                num_params=setting.num_params, rank=setting.rank, llc_exact=exact,
                multiplicity=setting.multiplicity, preconditioner=name,
                budget=budget, reasons=list(selection.reasons))
  if not selection.ok:
    return {**record, "llc_hat": None, "gradient_evaluations": selection.calibration_evaluations,
            "seconds": time.perf_counter() - start}
  max_budget = 16 * budget if max_budget is None else max_budget
  result, settings, evaluations, lengths = procedure.estimate_until_settled(
      dln.loss_fn, setting.params, setting.data, estimate_key, selection, max_budget=max_budget)
  record["reasons"] += lengths
  convergence = result.convergence
  return {**record, "llc_hat": result.llc_mean, "llc_std": result.llc_std,
          "llc_sem": result.llc_sem, "rel_error": (result.llc_mean - exact) / exact,
          "step_size": settings.step_size, "gamma": settings.gamma,
          "num_chains": settings.num_chains, "num_draws": settings.num_draws,
          "num_burnin": settings.num_burnin, "max_budget": max_budget,
          "gradient_evaluations": evaluations,
          "mala": selection.mala, "rhat": convergence.rhat, "ess_bulk": convergence.ess_bulk,
          "num_failed": result.num_failed, "warnings": list(result.warnings),
          "seconds": time.perf_counter() - start}


def run_ladder(rungs: Sequence[Rung] = LADDER, *, max_params: int | None = None,
               min_params: int = 0, **kwargs) -> Iterator[dict]:
  """:func:`estimate` of each rung with ``min_params`` to ``max_params`` parameters, in order
  (a generator: each result as it is done)."""
  for rung in rungs:
    size = dln.num_params(rung.widths)
    if min_params <= size and (max_params is None or size <= max_params):
      yield estimate(rung, **kwargs)


def _short(warning: str) -> str:
  """A few words for one of the estimate's warnings."""
  for start, words in (("LLC estimate not settled", "halves differ"),
                       ("R̂ of the loss trace", "R̂ > 1.01"),
                       ("effective sample size", "ESS too small")):
    if warning.startswith(start):
      return words
  return warning.split(":")[0]


def _sampler(record: dict) -> str:
  name = record.get("preconditioner", "none")
  return SAMPLER_NAMES.get(name, name)


def table(records: Sequence[dict]) -> str:
  """The ladder as a markdown table; the last column says whether the chains settled (the
  estimate's warnings, shortened) or, if not, that the ceiling stopped the doubling."""
  lines = ["| widths | L | d | r | λ | sampler | γ | λ̂ ± std | rel. error | draws | grad. evals | "
           "MALA | R̂ | ESS | time | chains |", "|" + "---|" * 16]
  for r in records:
    head = (f"| {'-'.join(map(str, r['widths']))} | {r['depth']} | {r['num_params']:,} | "
            f"{r['rank']} | {r['llc_exact']:g} | {_sampler(r)} |")
    if r.get("llc_hat") is None:
      lines.append(head + " | no usable setting | | | "
                   f"{r['gradient_evaluations']:,} | | | | {r['seconds']:.0f} s | |")
      continue
    state = "settled" if not r.get("warnings") else "not settled (" + ", ".join(
        _short(w) for w in r["warnings"]) + (")" if not any(
            "above the ceiling" in line for line in r["reasons"]) else ") at the ceiling")
    lines.append(
        head + f" {r['gamma']:.3g} | {r['llc_hat']:.1f} ± {r['llc_std']:.1f} | "
        f"{100 * r['rel_error']:+.1f} % | {r['num_chains']} × {r['num_draws']} | "
        f"{r['gradient_evaluations']:,} | {r['mala']:.2f} | {r['rhat']:.3f} | "
        f"{r['ess_bulk']:.0f} | {r['seconds']:.0f} s | {state} |")
  return "\n".join(lines)


def plot(records: Sequence[dict], path: str | None = None):
  """Relative error against the number of parameters, one series per sampler (the records'
  ``preconditioner``), with Lau et al.'s reported band (within ≈ 0–30 % below 10⁵ parameters,
  25–75 % too low at 10⁶–10⁸) drawn for comparison. An estimate whose chains had not settled
  (it carries warnings) is drawn hollow."""
  from jaxdev.analysis import plots  # pylint: disable=import-outside-toplevel
  figure, ax = plots.figure(figsize=(6.0, 4.8), layout="constrained")
  done = [r for r in records if r.get("llc_hat") is not None]
  low = min([5e2] + [0.5 * r["num_params"] for r in done])
  ax.fill_between([low, 1e5], [-30, -30], [0, 0], color="0.85",
                  label="Lau et al.: ≈ 0–30 % low (< 10⁵)")
  ax.fill_between([1e6, 1e8], [-75, -75], [-25, -25], color="0.7",
                  label="Lau et al.: 25–75 % low (10⁶–10⁸)")
  ax.axhspan(-10, 10, color="C2", alpha=0.12, label="± 10 %")
  names = list(dict.fromkeys(r.get("preconditioner", "none") for r in done))
  for i, name in enumerate(names):
    series = [r for r in done if r.get("preconditioner", "none") == name]
    label = _sampler({"preconditioner": name})
    for settled in (True, False):
      part = [r for r in series if bool(r.get("warnings")) != settled]
      if part:
        ax.errorbar([r["num_params"] * (1.0 + 0.08 * i) for r in part],
                    [100 * r["rel_error"] for r in part],
                    yerr=[100 * r["llc_std"] / r["llc_exact"] for r in part], fmt="os"[i % 2],
                    color=f"C{i}", mfc=None if settled else "none",
                    label=f"jaxdev {label}" + ("" if settled else ", not settled"))
  ax.axhline(0.0, color="k", lw=0.8)
  ax.set_xscale("log")
  ax.set_xlim(low, 1e8)
  ax.set_xlabel("parameters d")
  ax.set_ylabel("(λ̂ − λ) / λ  [%]")
  ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
  if path is not None:
    rundir.atomic_save_figure(figure, path, dpi=130)
  return figure
