"""Sampler settings chosen by a written rule instead of by hand: :func:`select_settings`.

The rule, in five steps, for a given nβ, batch size, number of chains and budget of gradient
evaluations (one minibatch value-and-gradient of one chain is one evaluation):

1. **Scale.** The largest Hessian eigenvalue h of the minibatch loss at w* (power iteration with
   Hessian-vector products on the first batch of the data). On a quadratic of curvature
   a = nβ·h the step w ← w − (ε/2)·a·w + √ε·ξ has stationary variance 1/(a·(1 − c/4)) with
   c = ε·a, against the target's 1/a: step sizes are measured in units of 1/(nβ·h), and the
   grid is ε_k = c_k / (nβ·h) for c = ½, ¼, …, 2⁻⁹ (``scales``). Its top, c = ½, inflates the
   stiffest direction's share of λ̂ by 1/(1 − ⅛) ≈ 14 % and softer ones by less; larger c are
   left out because the MALA acceptance does not see this bias when only some of many
   directions are stiff (a 10⁴-parameter DLN read 1,478 at c = 2 and 1,220 at c = ¼ against
   λ = 1,250 at γ = 1,000; the calibration's acceptance at c = 2 was 1.00).
2. **Localization.** γ = 1 / mean(w*²): the localizing Gaussian's spread per coordinate,
   1/√γ, is the root mean square of w*'s own coordinates, so the chain explores a
   neighbourhood of w* of the weights' own size. Without it (γ ≈ 1 against nβ·h ≈ 10⁵) a chain
   wanders along the flat directions of the zero set into regions of other curvature, and its
   λ̂ never settles (the same DLN read 3,739 at c = 2 and 1,401 at c = ½ after 15,000 draws,
   still rising, with γ = 1; 1,329 and settled at c = ½ with the rule's γ = 67). A stronger γ
   would cut the soft directions it exceeds (γ = 3,000 read 1,156). With w* = 0, or when
   ``gammas`` is given, γ is chosen from that grid instead: the smallest with a usable step size.
3. **Calibration.** Short chains at every grid point (:func:`jaxdev.sgld.calibrate`, common
   random numbers, a quarter of the draws as burn-in) with the MALA acceptance of each move on
   its own minibatch (``compute_mala="same_batch"``), using ``calibration_fraction`` of the
   budget.
4. **Selection.** The largest ε of the grid at which every chain stayed finite, none escaped,
   λ̂ > 0 and the mean MALA acceptance is at least ``min_mala`` (0.9 by default: Lau et al.'s
   well-tuned DLN runs had 0.86–0.93) (:func:`choose`). The rest of the budget goes to the
   estimate: ``num_chains`` chains of as many draws as it pays for, a quarter of them burn-in.
5. **Length.** :func:`estimate_until_settled` runs that estimate and, while its chains have
   not settled (the estimate's own checks: halves of the kept draws that disagree, R̂ > 1.01,
   an ESS too small for the standard error), runs it again with twice the draws, as long as
   the total stays within ``max_budget``: chains as long as the model's slowest relaxation
   needs, up to a ceiling, instead of one length for every model.

With a preconditioner the rule is weaker: the MALA acceptance is that of the plain Langevin
proposal at the preconditioned chains' points (:func:`jaxdev.sgld.mala_acceptance_probability`),
not of the preconditioned step, so it does not see that step's bias (on a 152-parameter DLN
with RMSProp, α 0.99, eps 0.1, the chosen ε gave λ̂ 15 % above λ, against 3 % for plain SGLD).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdev import sgld
from jaxdev.errors import ConfigError
from jaxdev.sgld import checks
from jaxdev.sgld.calibration import CalibrationResult
from jaxdev.sgld.calibration import calibrate
from jaxdev.sgld.chains import num_examples
from jaxdev.sgld.kernel import LossFn
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.precondition import resolve_preconditioner

SCALES = tuple(2.0 ** -k for k in range(1, 10))  # c = ½, ¼, …, 2⁻⁹


class Settings(NamedTuple):
  """Settings of :func:`jaxdev.sgld.estimate_llc` (``estimate_llc(..., **settings._asdict())``).

  Attributes:
    step_size, gamma, nbeta: ε, γ and nβ.
    num_chains, num_draws, num_burnin, batch_size: the chains of the estimate.
    preconditioner: None or an :class:`jaxdev.sgld.RMSProp`.
  """
  step_size: float
  gamma: float
  nbeta: float
  num_chains: int
  num_draws: int
  num_burnin: int
  batch_size: int
  preconditioner: Optional[object] = None


@dataclasses.dataclass(repr=False)
class Selection:
  """What :func:`select_settings` chose and why.

  Attributes:
    settings: the chosen :class:`Settings`, or None when no grid point was usable.
    reasons: one line per decision, in order (the scale, the grid, the choice, the draws).
    curvature: h, the largest Hessian eigenvalue of the minibatch loss at w*.
    calibration: the grid that was run (``.table()``, ``.figure()``).
    mala: mean MALA acceptance at the chosen step size (NaN without a choice).
    calibration_evaluations: gradient evaluations spent on steps 1 and 2.
    budget: the budget given.
  """
  settings: Optional[Settings]
  reasons: list
  curvature: float
  calibration: CalibrationResult
  mala: float
  calibration_evaluations: int
  budget: int

  @property
  def ok(self) -> bool:
    """True when settings were chosen."""
    return self.settings is not None

  def __str__(self) -> str:
    return "\n".join(self.reasons)

  def __repr__(self) -> str:
    return f"Selection({self.settings!r})"


def top_curvature(loss_fn: LossFn, params: PyTree, batch: PyTree, key: jax.Array,
                  num_iterations: int = 20) -> float:
  """The largest |eigenvalue| of the Hessian of ``loss_fn(·, batch)`` at ``params``.

  Power iteration from a Gaussian start with Hessian-vector products (forward over reverse
  mode), ``num_iterations`` of them; the Rayleigh quotient of the last iterate.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  start = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, jnp.float32)
                                       for k, x in zip(keys, leaves)])

  def hvp(vector):
    grad = jax.grad(lambda p: loss_fn(p, batch))
    return jax.jvp(grad, (params,), (vector,))[1]

  def dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  def step(_, vector):
    product = hvp(vector)
    return jax.tree.map(lambda x: x / jnp.sqrt(dot(product, product)), product)

  @jax.jit
  def run(vector):
    vector = jax.tree.map(lambda x: x / jnp.sqrt(dot(vector, vector)), vector)
    vector = jax.lax.fori_loop(0, num_iterations, step, vector)
    return jnp.abs(dot(vector, hvp(vector)))

  return float(run(start))


def weight_scale_gamma(params: PyTree) -> float:
  """γ = 1 / mean(w*²) over all coordinates of ``params`` (inf when w* = 0)."""
  leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(params)]
  mean_square = float(np.mean(np.concatenate(leaves) ** 2)) if leaves else 0.0
  return 1.0 / mean_square if mean_square > 0.0 else math.inf


def choose(calibration: CalibrationResult, min_mala: float) -> Optional[tuple]:
  """(i, k): the largest usable step size of the smallest γ that has one, or None.

  Usable: no chain failed (non-finite loss) or escaped, λ̂ > 0 and mean MALA acceptance
  ≥ ``min_mala``. Whether the short calibration chains settled is not asked: at small ε they
  are still relaxing from w*, which says nothing of the step size's bias; the estimate's own
  settling check, R̂ and ESS judge the long chains.
  """
  usable = ((calibration.num_failed == 0) & ~calibration.escaped & (calibration.llc_mean > 0)
            & (calibration.mala_mean >= min_mala))[:, 0, :]  # [ε, γ] at the one nβ
  for k in np.argsort(calibration.gammas, kind="stable"):
    for i in np.argsort(-calibration.step_sizes, kind="stable"):
      if usable[i, k]:
        return int(i), int(k)
  return None


def select_settings(loss_fn: LossFn, params: PyTree, data: PyTree, key: jax.Array, *,
                    budget: int, nbeta: float, batch_size: int, num_chains: int = 4,
                    gammas: Optional[Sequence[float]] = None, preconditioner=None,
                    min_mala: float = 0.9, scales: Sequence[float] = SCALES,
                    calibration_fraction: float = 0.25, burnin_fraction: float = 0.25,
                    num_power_iterations: int = 20, grid_map: str = "vmap") -> Selection:
  """Chooses ε and γ for an LLC estimate at ``params`` by the module's rule, within a budget.

  Args:
    loss_fn, params, data, key: as for :func:`jaxdev.sgld.estimate_llc`.
    budget: gradient evaluations for everything (the scale, the calibration and the estimate
      the settings describe); one evaluation is one chain's minibatch value-and-gradient, a
      Hessian-vector product counts as two.
    nbeta: nβ (fixed: it defines the target, e.g. n / ln n for n examples).
    batch_size: the minibatch size m.
    num_chains: chains of the calibration and of the estimate.
    gammas: None: γ = 1 / mean(w*²) (:func:`weight_scale_gamma`; (1.0,) when w* = 0); else
      localization strengths to try (the smallest usable is taken).
    preconditioner: None, ``"rmsprop"`` or an :class:`jaxdev.sgld.RMSProp`.
    min_mala: smallest accepted mean MALA acceptance.
    scales: the grid's step sizes in units of 1/(nβ·h).
    calibration_fraction: share of the budget for the calibration grid.
    burnin_fraction: share of each chain's draws dropped as burn-in (calibration and estimate).
    num_power_iterations: Hessian-vector products of the power iteration (plus one).
    grid_map: ``"vmap"`` or ``"map"`` (less memory) over the grid points.

  Returns:
    :class:`Selection` (``settings`` None, with the reason, when no grid point is usable).

  Raises:
    jaxdev.errors.ConfigError: an argument out of range, or a budget too small for the grid.
  """
  size = num_examples(data)
  if not 0 < batch_size <= size:
    raise ConfigError(f"batch_size must be in [1, {size}], got {batch_size}")
  if not (math.isfinite(nbeta) and nbeta > 0):
    raise ConfigError(f"nbeta must be finite and > 0, got {nbeta}")
  if not 0.0 < calibration_fraction < 1.0 or not 0.0 <= burnin_fraction < 1.0:
    raise ConfigError(f"calibration_fraction must be in (0, 1) and burnin_fraction in [0, 1), "
                      f"got {calibration_fraction} and {burnin_fraction}")
  scales = sorted({float(c) for c in scales}, reverse=True)
  if not scales or min(scales) <= 0:
    raise ConfigError(f"scales must be positive numbers, got {scales}")
  gamma_reason = None
  if gammas is None:
    gamma = weight_scale_gamma(params)
    gammas = (gamma,) if math.isfinite(gamma) else (1.0,)
    gamma_reason = (f"localization: γ = 1/mean(w*²) = {gamma:.4g}, so the localizing spread per "
                    f"coordinate equals w*'s root mean square" if math.isfinite(gamma) else
                    "localization: w* = 0 has no weight scale; γ = 1")
  gammas = checks.check_grid("gammas", gammas)
  num_chains = checks.check_count("num_chains", num_chains)
  preconditioner = resolve_preconditioner(preconditioner)
  power_cost = 2 * (num_power_iterations + 1)
  grid_points = len(scales) * len(gammas)
  per_draw = grid_points * num_chains * 2  # same-batch MALA: two gradients per draw
  calibration_draws = int((calibration_fraction * budget - power_cost) // per_draw)
  if calibration_draws < 8:
    least = int(math.ceil((8 * per_draw + power_cost) / calibration_fraction))
    raise ConfigError(f"a budget of {budget} gradient evaluations leaves fewer than 8 draws per "
                      f"chain for a calibration of {grid_points} grid points × {num_chains} "
                      f"chains; give at least {least}")
  curvature_key, calibration_key = jax.random.split(key)
  first_batch = jax.tree.map(lambda x: x[:batch_size], data)
  curvature = top_curvature(loss_fn, params, first_batch, curvature_key, num_power_iterations)
  if not (math.isfinite(curvature) and curvature > 0):
    raise ConfigError(f"the loss has no positive curvature at params (largest Hessian "
                      f"eigenvalue {curvature:g}); the step-size scale 1/(nβ·h) is undefined")
  unit = 1.0 / (nbeta * curvature)
  step_sizes = [c * unit for c in scales]
  reasons = [
      f"scale: largest Hessian eigenvalue of the minibatch loss at w* h = {curvature:.4g} "
      f"({num_power_iterations} power iterations on the first {batch_size} examples); "
      f"nβ = {nbeta:.6g}, so 1/(nβ·h) = {unit:.3g}",
      f"grid: ε = c/(nβ·h) for c in {', '.join(f'{c:g}' for c in scales)}; γ in "
      f"{', '.join(f'{g:g}' for g in gammas)}; {num_chains} chains × {calibration_draws} draws "
      f"({int(burnin_fraction * calibration_draws)} burn-in), MALA acceptance on each move's "
      f"own batch"]
  if gamma_reason is not None:
    reasons.insert(1, gamma_reason)
  calibration = calibrate(loss_fn, params, data, calibration_key, step_sizes=step_sizes,
                          nbetas=[nbeta], gammas=gammas, num_chains=num_chains,
                          num_draws=calibration_draws,
                          num_burnin=int(burnin_fraction * calibration_draws),
                          batch_size=batch_size, preconditioner=preconditioner,
                          compute_mala="same_batch", grid_map=grid_map)
  spent = power_cost + per_draw * calibration_draws
  choice = choose(calibration, min_mala)
  if choice is None:
    reasons.append(f"no usable grid point: at every step size and γ a chain failed or escaped, "
                   f"λ̂ was not positive or the MALA acceptance was below {min_mala:g} (see the "
                   f"calibration table); widen the grid (smaller scales) or raise the budget")
    return Selection(None, reasons, curvature, calibration, float("nan"), spent, budget)
  i, k = choice
  step_size, gamma = float(calibration.step_sizes[i]), float(calibration.gammas[k])
  result = calibration.results[i, 0, k]
  mala = float(calibration.mala_mean[i, 0, k])
  reasons.append(
      f"step size: ε = {step_size:.3g} (c = {scales[i]:g}), the largest of the grid whose chains "
      f"all stayed finite, none escaped, λ̂ > 0 and the MALA acceptance ≥ {min_mala:g} (it is "
      f"{mala:.3f}; λ̂ {result.llc_mean:.4g} ± {result.llc_std:.2g} in calibration)"
      + (f"; γ = {gamma:g}, the smallest with such a step size" if len(gammas) > 1 else ""))
  num_draws = int((budget - spent) // num_chains)
  if num_draws < 2:
    reasons.append(f"no budget left for the estimate: the calibration spent {spent} of "
                   f"{budget} gradient evaluations")
    return Selection(None, reasons, curvature, calibration, mala, spent, budget)
  num_burnin = int(burnin_fraction * num_draws)
  reasons.append(f"draws: the remaining {budget - spent} gradient evaluations / {num_chains} "
                 f"chains = {num_draws} draws each, the first {num_burnin} burn-in")
  settings = Settings(step_size, gamma, float(nbeta), num_chains, num_draws, num_burnin,
                      batch_size, preconditioner)
  return Selection(settings, reasons, curvature, calibration, mala, spent, budget)


def estimate_until_settled(loss_fn: LossFn, params: PyTree, data: PyTree, key: jax.Array,
                           selection: Selection, *, max_budget: int):
  """Step 5 of the rule: the estimate with ``selection``'s settings, doubled in length while
  its chains have not settled and the total fits in ``max_budget``.

  Every round starts again from w* with the same key (a longer chain repeats the shorter one's
  draws and goes on), a quarter of its draws burn-in. A round with a failed or escaped chain
  ends the doubling: longer chains do not mend those.

  Args:
    loss_fn, params, data, key: as for :func:`jaxdev.sgld.estimate_llc`.
    selection: a :class:`Selection` with settings (``selection.ok``).
    max_budget: ceiling on the gradient evaluations of everything, the selection's included.

  Returns:
    (result, settings, evaluations, reasons): the last round's :class:`jaxdev.sgld.LLCResult`
    and :class:`Settings`, the gradient evaluations of the selection and of every round, and
    one line per round.

  Raises:
    ConfigError: ``selection`` has no settings.
  """
  if not selection.ok:
    raise ConfigError("the selection has no settings to estimate with")
  settings = selection.settings
  spent = selection.calibration_evaluations
  reasons = []
  while True:
    result = sgld.estimate_llc(loss_fn, params, data, key, warn=False, **settings._asdict())
    spent += settings.num_chains * settings.num_draws
    state = "settled" if not result.warnings else "; ".join(w.split(":")[0]
                                                             for w in result.warnings)
    reasons.append(f"length: {settings.num_chains} chains × {settings.num_draws} draws "
                   f"({settings.num_burnin} burn-in): λ̂ {result.llc_mean:.4g}, {state}")
    more = settings.num_chains * 2 * settings.num_draws
    over = spent + more > max_budget
    if not result.warnings or result.num_failed or np.any(result.escaped) or over:
      if result.warnings and over:
        reasons.append(f"length: twice the draws would need {spent + more:,} gradient "
                       f"evaluations in all, above the ceiling {max_budget:,}")
      return result, settings, spent, reasons
    settings = settings._replace(num_draws=2 * settings.num_draws,
                                 num_burnin=2 * settings.num_burnin)
