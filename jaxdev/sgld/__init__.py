"""SGLD sampling of a localized tempered posterior, and the local learning coefficient (LLC).

Entry point: ``from jaxdev import sgld`` gives everything. The package, one concern per module:

  kernel.py         SGLDState, SGLDInfo, init, build_kernel: the update rule, written once
  precondition.py   identity and RMSProp as init/update pairs
  masks.py          weight masks from descriptions (parameter-path globs; extensible selectors)
  mala.py           MALA acceptance probability of a move
  chains.py         run_chains (lax.scan over the kernel), minibatches, init_loss = L_n(w*),
                    sample_chains: the one program (hyperparameters traced) every caller runs
  summary.py        LLCResult and summarize: failed, escaped and unsettled chains (numpy);
                    summarize_observables: the LLC split over observables, susceptibilities
  estimate.py       estimate_llc: one jitted program, then the summary
  calibration.py    calibrate over an ε × nβ × γ grid, and the selection rule
  plots.py          plot_trace, plot_calibration (matplotlib)
  checks.py         argument checks at the API boundary

Target (docs/methods.md, "The estimator"). Around a point w* (a checkpoint) the sampler draws from

    p(w) ∝ exp( −nβ·L_n(w) − (γ/2)‖w − w*‖² − (λ_wd/2)‖w‖² )

with the update, on the minibatch mean loss L_m,

    w ← w − (ε/2)·G·( nβ ∇L_m(w) + γ(w − w*) + λ_wd·w ) + √(ε·G)·noise_level·ξ,   ξ ~ N(0, I)

where G = 1 without a preconditioner, and for RMSProp-SGLD (devinterp's ``rmsprop_sgld``)
V ← αV + (1−α)(∇L_m)², G = 1/(√V + eps), elementwise. A weight mask zeroes drift, localization
and noise of the frozen coordinates; a bounding box clips |w − w*| coordinatewise after the step.
The LLC estimate is

    λ̂(w*) = nβ · ( mean over chains and kept draws of L_m(w_t) − L_n(w*) )

with L_m(w_t) the minibatch loss at the **pre-step** weights of draw t.

Conventions:
  * ``nbeta`` is the product nβ (effective sample size times inverse temperature), not β.
    Default nβ = m / ln m for batch size m (devinterp's and the paper's convention).
  * ``loss_fn(params, batch) -> scalar`` is the **mean** loss over the batch. Its scale matters
    at finite nβ: loss c·L with nβ/c gives exactly the same chains and estimate as L with nβ.
  * ``data`` is a pytree of arrays with a leading example axis of size n. Minibatch indices are
    drawn uniformly **with replacement**, independently for every draw and chain (``batch_size
    < n``; duplicates within a batch are possible, as are examples never seen); with
    ``batch_size == n`` every draw uses the whole dataset in order (full batch, no gather).
  * Randomness: draw t of a chain with key k uses ``fold_in(k, t)``, split into a batch key and a
    noise key. Batches and noise depend only on (chain key, t), so two parameter points sampled
    with the same keys see identical batches and noise (smooth LLC curves across checkpoints).
  * Every chain starts at w* itself (draw 0 is the loss at w*). ``llc_std`` is the standard
    deviation of the per-chain estimates with **ddof = 1**; ``llc_sem`` = llc_std / √C.
  * :func:`init`, :func:`build_kernel`, :func:`run_chains` and :func:`init_loss` are pure and
    jittable (chains ``vmap``-ed or ``lax.map``-ped, draws under ``lax.scan``);
    :func:`estimate_llc` and :func:`calibrate` run one jitted program each and summarise on the
    host (:func:`summarize`, numpy).
  * Hyperparameters (ε, nβ, γ, noise level, λ_wd, the mask's values, the box) are arguments of
    the compiled program, not constants: new values do not recompile (:func:`sample_chains`).
  * Bad arguments (ε ≤ 0, nβ ≤ 0, γ < 0, no chains or draws, burn-in ≥ draws, an empty grid, an
    unknown preconditioner, a mask selector that selects nothing) raise
    :class:`jaxdev.errors.ConfigError` (a ``ValueError``) before any computation.

Accuracy against analytic learning coefficients: docs/methods.md, "The estimator", and
``tests/test_sgld.py``.
"""

from __future__ import annotations

from jaxdev.sgld.calibration import CalibrationResult
from jaxdev.sgld.calibration import Recommendation
from jaxdev.sgld.calibration import calibrate
from jaxdev.sgld.chains import ChainTrace
from jaxdev.sgld.chains import hyperparameters
from jaxdev.sgld.chains import init_loss
from jaxdev.sgld.chains import run_chains
from jaxdev.sgld.chains import sample_chains
from jaxdev.sgld.estimate import estimate_llc
from jaxdev.sgld.kernel import LossFn
from jaxdev.sgld.kernel import PyTree
from jaxdev.sgld.kernel import SGLDInfo
from jaxdev.sgld.kernel import SGLDState
from jaxdev.sgld.kernel import build_kernel
from jaxdev.sgld.kernel import default_nbeta
from jaxdev.sgld.kernel import init
from jaxdev.sgld.mala import mala_acceptance_probability
from jaxdev.sgld.masks import parameter_paths
from jaxdev.sgld.masks import resolve_mask
from jaxdev.sgld.plots import plot_calibration
from jaxdev.sgld.plots import plot_trace
from jaxdev.sgld.precondition import RMSProp
from jaxdev.sgld.precondition import resolve_preconditioner
from jaxdev.sgld.summary import LLCResult
from jaxdev.sgld.summary import LLCWarning
from jaxdev.sgld.summary import summarize
from jaxdev.sgld.summary import summarize_observables

__all__ = [
    "RMSProp", "SGLDState", "SGLDInfo", "ChainTrace", "LLCResult", "CalibrationResult",
    "Recommendation", "LLCWarning", "LossFn", "PyTree", "default_nbeta", "init", "build_kernel",
    "mala_acceptance_probability", "run_chains", "sample_chains", "hyperparameters", "init_loss",
    "resolve_preconditioner", "resolve_mask", "parameter_paths",
    "summarize", "summarize_observables", "estimate_llc", "calibrate", "plot_trace",
    "plot_calibration",
]
