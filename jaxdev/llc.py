"""LLC over a whole training run: checkpoints × chains as one sharded computation.

``sweep(workdir, settings)`` reads a run's orbax checkpoints, stacks them in groups on a leading
axis and estimates the LLC of every checkpoint with :func:`jaxdev.sgld.run_chains`, mapped over
checkpoints and chains and laid out on a ("ckpt", "chain") device mesh with ``shard_map``: each
device samples its own block of checkpoints × chains. Every checkpoint uses the same chain keys,
hence the same minibatches and noise (docs/methods.md, "The estimator"), which keeps the LLC
curve smooth.

Results go to the run's LLC record directory of the sweep's name (``RunDir(workdir).llc(NAME)``,
see :mod:`jaxdev.rundir`) as they finish, one record per checkpoint (written atomically by
process 0), next to the sweep's settings. A restarted sweep does only the missing checkpoints
(and those whose record no longer reads back); because a checkpoint's numbers depend only on
its parameters and the key, the result is the same as an uninterrupted sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from jaxdev import checkpoints
from jaxdev import distributed
from jaxdev import engine
from jaxdev import rundir
from jaxdev import sgld
from jaxdev.sgld import checks as sgld_checks
from jaxdev.sgld import masks as sgld_masks
from jaxdev.sgld import summary as sgld_summary
from jaxdev import tasks as tasks_lib
from jaxdev.errors import ConfigError
from jaxdev.errors import SweepError


#: Config values that mean "not set" (None in :class:`SweepSettings`).
_CONFIG_UNSET = {"nbeta": 0, "num_init_loss_batches": 0, "mask": "", "bounding_box": 0,
                 "observables": ""}


def _is_unset(value, unset) -> bool:
  if value is None:
    return True
  if isinstance(unset, str):
    return isinstance(value, str) and value.strip() == unset
  return isinstance(value, (int, float)) and not isinstance(value, bool) and value == unset


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """SGLD settings of one sweep; all are recorded with the sweep's results (``settings.json``).

  The sampler's options are those of :func:`jaxdev.sgld.estimate_llc` (docs/methods.md,
  "Sampler options"); a sweep's record at a checkpoint equals ``estimate_llc`` there with the
  same options and the key ``jax.random.key(seed)``. A sweep recorded before an option existed
  reads it as its default, which is the sampler's behaviour before that option.

  Attributes:
    step_size: ε.
    gamma: γ, the localization strength.
    nbeta: nβ, the inverse temperature times the dataset size (the product); None resolves to
      m / ln m for the SGLD batch size m.
    num_chains: chains per checkpoint.
    num_draws: SGLD steps per chain (burn-in included).
    batch_size: m, examples per SGLD minibatch.
    num_burnin: leading draws excluded from the estimate.
    thin: keep every ``thin``-th draw after burn-in.
    noise_level: scale of the injected noise (1 = exact SGLD).
    num_sampling_examples: size of the fixed sampling dataset.
    sampling_seed: seed of the sampling dataset.
    num_init_loss_batches: batches of the sampling dataset used for L_n(w*); None = all of it.
    seed: seed of the chain keys (shared by every checkpoint).
    min_good_fraction: a checkpoint is estimated only when **more than** this fraction of its
      chains survive (finite loss throughout); otherwise it is "failed" and its llc_mean is NaN
      (see :func:`chain_status`). The default 0.5 means more than half must survive.
    weight_decay: λ_wd ≥ 0 of a Gaussian prior centred at zero (adds λ_wd·w to the drift).
    mask: the weights the chains move, as a description (:func:`jaxdev.sgld.resolve_mask`):
      parameter-path globs such as ``"*attn*"``, a comma-separated string or a sequence of them;
      None = every weight. The others stay at w* (the weight-restricted LLC). Resolved against
      the model's parameters when the sweep starts; a glob that selects nothing is an error.
    preconditioner: ``"none"`` (plain SGLD) or ``"rmsprop"`` (RMSProp-SGLD with
      ``rmsprop_alpha`` and ``rmsprop_eps``, :class:`jaxdev.sgld.RMSProp`).
    rmsprop_alpha: RMSProp's decay of the running mean of squared gradients, in [0, 1).
    rmsprop_eps: RMSProp's eps > 0: the step scale is 1/(√V + eps).
    bounding_box: None, or b > 0: each step is clipped to |w − w*| ≤ b coordinatewise.
    compute_mala: False (``"none"``), ``"consecutive"`` (True) or ``"same_batch"``: record each
      chain's mean MALA acceptance probability over the kept draws as ``mala_acceptance`` (see
      :func:`jaxdev.sgld.run_chains` for the two pairings).
    observables: None, or the name of one of the model's observables
      (:attr:`jaxdev.tasks.Model.observables`, e.g. ``"positions"``): recorded at every draw of
      the same chains, and kept per checkpoint as the LLC split over them and their
      susceptibilities (:func:`jaxdev.sgld.summarize_observables`; the record's
      ``observable_*`` and ``susceptibility``).
    matmul_dtype: ``"float32"`` or ``"bfloat16"``: the precision of the inputs of the regression
      model's dense products in the chains and in L_n(w*) (bfloat16: mixed precision, with
      float32 sums, parameters, noise and update; :func:`jaxdev.tasks.make_task`).
  """

  step_size: float
  gamma: float
  nbeta: float | None
  num_chains: int
  num_draws: int
  batch_size: int
  num_burnin: int = 0
  thin: int = 1
  noise_level: float = 1.0
  num_sampling_examples: int = 2 ** 20
  sampling_seed: int = 3_000
  num_init_loss_batches: int | None = None
  seed: int = 0
  min_good_fraction: float = 0.5
  weight_decay: float = 0.0
  mask: str | Sequence[str] | None = None
  preconditioner: str = "none"
  rmsprop_alpha: float = 0.99
  rmsprop_eps: float = 0.1
  bounding_box: float | None = None
  compute_mala: bool | str = False
  observables: str | None = None
  matmul_dtype: str = "float32"

  def resolved(self, params=None, selectors=None) -> "SweepSettings":
    """A checked copy in canonical form: nβ filled in, the mask a tuple of selectors (or
    None), the preconditioner ``"none"`` or ``"rmsprop"``, ``compute_mala`` False or a pairing.

    Every value is checked by the sampler's checks (:mod:`jaxdev.sgld.checks`), as
    :func:`jaxdev.sgld.estimate_llc` checks its arguments.

    Args:
      params: the model's parameters or their structure (``jax.eval_shape`` of its init): when
        given, the mask is also resolved against them (every selector must select something).
      selectors: the model's selector kinds (``tasks.model_for(config).mask_selectors``), for
        a mask with ``KIND:ARGUMENT`` selectors such as ``head:1.0``.

    Raises:
      ConfigError: a value out of range (the message names the ``sgld.`` config field).
    """
    where = "sgld."
    sgld_checks.check_estimate(
        step_size=self.step_size, nbeta=1.0 if self.nbeta is None else self.nbeta,
        gamma=self.gamma, num_chains=self.num_chains, num_draws=self.num_draws,
        batch_size=self.batch_size, num_burnin=self.num_burnin, thin=self.thin,
        noise_level=self.noise_level, weight_decay=self.weight_decay,
        bounding_box=self.bounding_box, compute_mala=self.compute_mala, prefix=where)
    size = sgld_checks.check_count(f"{where}num_sampling_examples", self.num_sampling_examples)
    for name in ("seed", "sampling_seed"):
      sgld_checks.check_seed(f"{where}{name}", getattr(self, name))
    if self.batch_size > size:
      raise ConfigError(f"{where}batch_size ({self.batch_size}) exceeds the sampling dataset "
                        f"({where}num_sampling_examples = {size})")
    if self.num_init_loss_batches is not None:
      batches = sgld_checks.check_count(f"{where}num_init_loss_batches",
                                        self.num_init_loss_batches)
      if batches * self.batch_size > size:
        raise ConfigError(f"{where}num_init_loss_batches × batch_size = "
                          f"{batches * self.batch_size} exceeds the sampling dataset ({size})")
    if not 0 <= self.min_good_fraction < 1:
      raise ConfigError(f"{where}min_good_fraction must be in [0, 1), got "
                        f"{self.min_good_fraction}")
    if self.matmul_dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"{where}matmul_dtype must be 'float32' or 'bfloat16', got "
                        f"{self.matmul_dtype!r}")
    preconditioner, alpha, eps = self.preconditioner, self.rmsprop_alpha, self.rmsprop_eps
    if isinstance(preconditioner, sgld.RMSProp):
      if preconditioner.initial != 0.0:
        raise ConfigError(f"{where}preconditioner: the sweep's RMSProp starts its running mean "
                          f"at 0 (devinterp's); RMSProp(initial={preconditioner.initial:g}) is "
                          f"an option of sgld.estimate_llc")
      preconditioner, alpha, eps = "rmsprop", preconditioner.alpha, preconditioner.eps
    if preconditioner in (None, "none", "identity"):
      preconditioner = "none"
    elif preconditioner != "rmsprop":
      raise ConfigError(f"{where}preconditioner must be 'none' or 'rmsprop', got "
                        f"{preconditioner!r}")
    alpha, eps, _ = sgld_checks.check_rmsprop(alpha, eps, prefix=f"{where}rmsprop_")
    try:
      mask = sgld_masks.parse_mask(self.mask)
    except ConfigError as err:  # "mask must be ..."
      raise ConfigError(f"{where}{err}") from None
    nbeta = sgld.default_nbeta(self.batch_size) if self.nbeta is None else float(self.nbeta)
    observables = self.observables
    if observables is not None:
      if not isinstance(observables, str):
        raise ConfigError(f"{where}observables must be the name of an observable or '', got "
                          f"{observables!r}")
      observables = None if observables.strip() in ("", "none") else observables.strip()
    out = dataclasses.replace(
        self, observables=observables, nbeta=nbeta, mask=mask, preconditioner=preconditioner,
        rmsprop_alpha=alpha, rmsprop_eps=eps,
        weight_decay=float(self.weight_decay), noise_level=float(self.noise_level),
        bounding_box=None if self.bounding_box is None else float(self.bounding_box),
        compute_mala=sgld_checks.check_compute_mala(self.compute_mala, where))
    if params is not None:
      out.weight_mask(params, selectors)
    return out

  def observable_fn(self, model):
    """The settings' observables of ``model`` (a :class:`jaxdev.tasks.Model`), or None.

    Raises:
      ConfigError: the model has no observable of that name.
    """
    if self.observables is None:
      return None
    available = dict(getattr(model, "observables", None) or {})
    if self.observables not in available:
      raise ConfigError(f"sgld.observables: the model has no observable {self.observables!r} "
                        f"(it has: {', '.join(sorted(available)) or 'none'})")
    return available[self.observables]

  def sampler_preconditioner(self) -> "sgld.RMSProp | None":
    """The sampler's ``preconditioner`` argument: None or an :class:`jaxdev.sgld.RMSProp`."""
    if self.preconditioner == "rmsprop":
      return sgld.RMSProp(self.rmsprop_alpha, self.rmsprop_eps)
    return sgld.resolve_preconditioner(self.preconditioner)

  def weight_mask(self, params, selectors=None):
    """The sampler's ``mask`` argument for the model's ``params`` (or their structure): None
    (every weight, also when the mask selects every coordinate) or a pytree of boolean arrays
    (:func:`jaxdev.sgld.resolve_mask`; ``selectors`` adds selector kinds).

    Raises:
      ConfigError: a selector that selects nothing or is of an unknown kind.
    """
    try:
      mask = sgld.resolve_mask(self.mask, params, selectors)
    except ConfigError as err:  # "mask selector ..."
      raise ConfigError(f"sgld.{err}") from None
    if mask is not None and all(np.all(m) for m in jax.tree.leaves(mask)):
      return None  # every weight: the unrestricted program, so the numbers are its own
    return mask

  @classmethod
  def from_config(cls, section) -> "SweepSettings":
    """Settings from a ConfigDict section holding these field names (absent ones take their
    defaults). The config's "not set" values: nbeta 0 (m / ln m), num_init_loss_batches 0 (the
    whole sampling set), mask "" (every weight), bounding_box 0 (no box), compute_mala "none",
    observables "" (none)."""
    values = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section}
    for name, unset in _CONFIG_UNSET.items():
      if name in values and _is_unset(values[name], unset):
        values[name] = None
    if isinstance(values.get("mask"), (list, tuple)):
      values["mask"] = tuple(values["mask"])
    return cls(**values)


@dataclasses.dataclass
class SweepResult:
  """What a sweep did. ``failed`` maps checkpoint steps that could not be read to the reason."""

  out_dir: str
  steps_done: list
  steps_skipped: list
  failed: dict
  seconds: float
  chain_steps_per_second: float
  damaged: dict = dataclasses.field(default_factory=dict)


#: The arrays every per-checkpoint record holds (see :func:`result_record`).
RECORD_KEYS = ("step", "llc_mean", "llc_std", "llc_per_chain", "loss_trace", "init_loss", "nbeta",
               "num_failed", "failed_chains")

#: Stored by newer sweeps; a record without them is read as in :func:`record_status`.
STATUS_KEYS = ("num_good", "status", "warnings")
#: Convergence diagnostics of the loss trace (:class:`jaxdev.sgld.diagnostics.Convergence`).
CONVERGENCE_KEYS = ("rhat", "ess_bulk", "ess_mean")

#: Stored when there is something to store: the distance trace, and each chain's MALA
#: acceptance when the sweep's ``compute_mala`` asks for it (see :func:`result_record`).
OPTIONAL_KEYS = ("distance_trace", "mala_acceptance")

#: A surviving chain is an outlier when its λ̂_c is further from the checkpoint's chain median
#: than OUTLIER_MADS scaled median absolute deviations and than the median's own magnitude.
OUTLIER_MADS = 5.0
MAD_SCALE = 1.4826


def chain_status(llc_per_chain, min_good_fraction: float = 0.5,
                 outlier_mads: float = OUTLIER_MADS) -> tuple[int, str, list]:
  """The verdict on one checkpoint's chains: (number of good chains, status, warnings).

  A chain is good when its λ̂_c is finite (failed chains are NaN). Status:

  - "failed": not more than ``min_good_fraction`` of the C chains are good
    (num_good ≤ min_good_fraction·C); the checkpoint gets no estimate.
  - "outliers": with at least 3 good chains, some good chain has |λ̂_c − m| > outlier_mads ·
    1.4826 · MAD and |λ̂_c − m| > |m|, where m is the median of the good λ̂_c and MAD their
    median absolute deviation from m. The estimate is kept and flagged.
  - "ok": otherwise.

  Args:
    llc_per_chain: [C] per-chain estimates, NaN/Inf for failed chains.
    min_good_fraction: in [0, 1).
    outlier_mads: the outlier threshold in scaled MADs.
  """
  per_chain = np.asarray(llc_per_chain, np.float64).reshape(-1)
  num_chains = per_chain.size
  good = per_chain[np.isfinite(per_chain)]
  num_good = int(good.size)
  if num_good <= min_good_fraction * num_chains:
    return num_good, "failed", [
        f"only {num_good} of {num_chains} chains survived (more than "
        f"{min_good_fraction:g} of them must): no estimate at this checkpoint"]
  if num_good >= 3:
    median = float(np.median(good))
    deviation = np.abs(good - median)
    mad = MAD_SCALE * float(np.median(deviation))
    outliers = good[(deviation > outlier_mads * mad) & (deviation > abs(median))]
    if outliers.size:
      return num_good, "outliers", [
          f"{outliers.size} of {num_good} surviving chains are outliers (λ̂_c "
          f"{', '.join(f'{v:.4g}' for v in outliers)} against a chain median of {median:.4g}); "
          "the estimate is kept but flagged: check step_size"]
  return num_good, "ok", []


def record_status(record: dict) -> tuple[int, str, list]:
  """(num_good, status, warnings) of a stored record; records written before these were stored
  read as num_good = chains − num_failed, status "ok" without failed chains, else by
  :func:`chain_status` with the default fraction."""
  if all(k in record for k in STATUS_KEYS):
    return (int(record["num_good"]), str(record["status"]),
            [str(w) for w in np.asarray(record["warnings"]).reshape(-1)])
  if int(record.get("num_failed", 0)) == 0:
    return int(np.asarray(record.get("llc_per_chain", [])).size), "ok", []
  return chain_status(record["llc_per_chain"])


def result_path(out_dir: str, step: int) -> str:
  """The record file of ``step`` in the sweep directory ``out_dir``."""
  return rundir.RecordDir(out_dir).record_path(step)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config saved in the run ``workdir``, checked (see tasks.check_config).

  Raises:
    RunDirError: no such run, or its config is damaged.
    ConfigError: the saved config cannot make a task.
  """
  config = rundir.RunDir(workdir).config
  tasks_lib.check_config(config, complete=True)
  return config


_ESTIMATOR_STATIC = ("loss_fn", "mesh", "num_draws", "batch_size", "num_init_loss_batches",
                     "preconditioner", "compute_mala", "observables", "restriction_map")


@functools.partial(jax.jit, static_argnames=_ESTIMATOR_STATIC)
def _estimate_groups(params, chain_keys, data, hyper, mask, bounding_box, *, loss_fn, mesh,
                     num_draws, batch_size, num_init_loss_batches, preconditioner, compute_mala,
                     observables=None, restriction_map=None):
  """:func:`jaxdev.sgld.sample_chains` at every checkpoint of ``params`` [G, ...], laid out on
  ``mesh``: checkpoints over "ckpt", chains over "chain", everything else replicated. With
  ``restriction_map`` ("vmap" or "map"), ``mask`` has a leading axis R of restrictions, mapped
  inside each checkpoint; trace leaves are then [G, R, C, draws]."""

  def local(params, chain_keys, data, hyper, mask, bounding_box):
    # params: (G_local, ...), chain_keys: (C_local, 2)
    def one(p):
      def restricted(m):
        return sgld.sample_chains(
            p, data, chain_keys, hyper, m, bounding_box, loss_fn=loss_fn, num_draws=num_draws,
            batch_size=batch_size, num_init_loss_batches=num_init_loss_batches,
            preconditioner=preconditioner, compute_mala=compute_mala, observables=observables)
      if restriction_map is None:
        out = restricted(mask)
        return out[1], out[0], (out[2] if observables is not None else None)
      if restriction_map == "vmap":
        out = jax.vmap(restricted)(mask)
      else:
        out = jax.lax.map(restricted, mask)  # L_n(w*) does not depend on the mask: keep one
      return out[1][0], out[0], (out[2][0] if observables is not None else None)
    return jax.vmap(one)(params)  # (G_local,), trace leaves (G_local, [R,] C_local, draws)

  chains = P("ckpt", None, "chain") if restriction_map is not None else P("ckpt", "chain")
  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("ckpt"), P("chain"), P(), P(), P(), P()),
                         out_specs=(P("ckpt"), chains, P("ckpt")), check_vma=False)
  return mapped(params, chain_keys, data, hyper, mask, bounding_box)


#: How :func:`build_estimator` maps R restrictions inside a checkpoint.
RESTRICTION_MAPS = ("map", "vmap")


def check_restriction_map(value, where: str = "") -> None:
  """Raises ConfigError unless ``value`` is one of :data:`RESTRICTION_MAPS` (``where`` names
  the config field in the message, e.g. ``"sweep."``)."""
  if value not in RESTRICTION_MAPS:
    raise ConfigError(f"{where}restriction_map must be 'map' or 'vmap', got {value!r}")


def stacked_masks(masks, params):
  """Masks (each None or a pytree of booleans broadcastable to ``params``, e.g. from
  :meth:`SweepSettings.weight_mask`) as one pytree like ``params`` of boolean arrays with a
  leading axis R (None = every weight): the ``mask`` of a sweep over R restrictions."""
  structure = jax.tree.map(lambda x: tuple(x.shape), params,
                           is_leaf=lambda x: hasattr(x, "shape"))
  full = []
  for mask in masks:
    if mask is None:
      mask = jax.tree.map(lambda _: True, params)
    full.append(jax.tree.map(lambda m, shape: np.broadcast_to(np.asarray(m, bool), shape), mask,
                             structure, is_leaf=lambda x: isinstance(x, tuple)))
  return jax.tree.map(lambda *leaves: np.stack(leaves), *full)


def build_estimator(loss_fn: Callable, settings: SweepSettings, mesh, selectors=None, *,
                    observables: Callable | None = None, masks: Sequence | None = None,
                    restriction_map: str = "map"):
  """The sweep's estimator: (stacked params [G, ...], chain keys [C, 2], data) ->
  (init_loss [G], :class:`jaxdev.sgld.ChainTrace` with leaves [G, C, draws], φ_n(w*) [G, O] or
  None).

  At each checkpoint it runs :func:`jaxdev.sgld.sample_chains`, the program of
  :func:`jaxdev.sgld.estimate_llc`, with every sampler option of ``settings``. Checkpoints are
  split over the mesh's "ckpt" axis and chains over its "chain" axis; the sampling data are
  replicated. ε, γ, nβ, the noise level, λ_wd, the bounding box and the mask's values are
  arguments of one compiled program (cached per ``loss_fn`` object, mesh and static settings),
  so an estimator built for other values of them does not recompile. The mask is resolved
  against the parameters' structure at the first call, with the model's selector kinds
  ``selectors`` (``model.mask_selectors``; needed for a mask such as ``head:1.0``).

  Args:
    observables: None, or ``(params, batch) -> [O]`` recorded at every draw (the trace's
      ``observables`` [G, C, draws, O]) and evaluated at w* (the third output).
    masks: None (the settings' mask), or R mask specs (each as :attr:`SweepSettings.mask`,
      ``None`` = every weight): every checkpoint is then sampled under each restriction, with
      the same chain keys (hence the same minibatches and noise) for all, in the same compiled
      program; trace leaves are [G, R, C, draws].
    restriction_map: with ``masks``, ``"map"`` (``lax.map``: one after the other inside the
      program) or ``"vmap"`` (the R restrictions as one batched computation: more memory, and
      faster only where the chains and checkpoints alone leave the device idle).
  """
  settings = settings.resolved()
  check_restriction_map(restriction_map)
  replicated = NamedSharding(mesh, P())

  def put(tree):
    return jax.tree.map(lambda x: distributed.global_array(np.asarray(x), replicated), tree)

  hyper = put(sgld.hyperparameters(settings.step_size, settings.nbeta, settings.gamma,
                                   settings.noise_level, settings.weight_decay))
  box = None if settings.bounding_box is None else put(np.float32(settings.bounding_box))
  static = dict(loss_fn=loss_fn, mesh=mesh, num_draws=settings.num_draws,
                batch_size=settings.batch_size,
                num_init_loss_batches=settings.num_init_loss_batches,
                preconditioner=settings.sampler_preconditioner(),
                compute_mala=settings.compute_mala, observables=observables,
                restriction_map=None if masks is None else restriction_map)
  resolved_masks = {}

  def estimate(params, chain_keys, data):
    structure = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)
    signature = (jax.tree.structure(structure), tuple(x.shape for x in jax.tree.leaves(structure)))
    if signature not in resolved_masks:
      if masks is None:
        resolved_masks[signature] = put(settings.weight_mask(structure, selectors))
      else:
        resolved_masks[signature] = put(stacked_masks(
            [dataclasses.replace(settings, mask=m).resolved().weight_mask(structure, selectors)
             for m in masks], structure))
    return _estimate_groups(params, chain_keys, data, hyper, resolved_masks[signature], box,
                            **static)

  return estimate


def chain_keys(settings: SweepSettings, mesh) -> jax.Array:
  """The chain keys [C, 2] every checkpoint shares, split over the mesh's "chain" axis."""
  keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(settings.seed),
                                                         settings.num_chains)))
  return distributed.global_array(keys, NamedSharding(mesh, P("chain")))


def sampling_data(task, settings: SweepSettings, mesh, num_examples: int | None = None):
  """The task's fixed SGLD dataset (``num_examples``, default the settings' size), replicated."""
  num_examples = settings.num_sampling_examples if num_examples is None else num_examples
  data = task.sampling_data(settings.sampling_seed, num_examples)
  return jax.tree.map(lambda x: distributed.global_array(x, NamedSharding(mesh, P())), data)


def _settings_defaults() -> dict:
  """The defaults of the settings: a sweep recorded before a setting existed reads it as this."""
  defaults = {}
  for f in dataclasses.fields(SweepSettings):
    if f.default is not dataclasses.MISSING:
      defaults[f.name] = f.default
    elif f.default_factory is not dataclasses.MISSING:
      defaults[f.name] = f.default_factory()
  return defaults


def _sweep_context(workdir: str, settings: SweepSettings):
  """(run, task, abstract params, selectors, observables fn, settings resolved against the
  model) of a sweep of the run in ``workdir``; every setting is checked before any file."""
  run = rundir.RunDir(workdir)
  config = load_run_config(workdir)
  settings.resolved()  # every value checked before the model is built
  task = tasks_lib.make_task(config, matmul_dtype=settings.matmul_dtype)
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  selectors = task.model.mask_selectors if task.model is not None else None
  settings = settings.resolved(abstract, selectors)
  observables = settings.observable_fn(task.model)
  return run, task, abstract, selectors, observables, settings


def _plan(run, settings: SweepSettings, name: str, steps) -> engine.Plan:
  return engine.plan(run, run.llc(name), settings_record=dataclasses.asdict(settings),
                     settings_defaults=_settings_defaults(), steps=steps, required=RECORD_KEYS,
                     what="SGLD settings",
                     rename_hint="pass a new sweep name to start another sweep")


def _record(step: int, settings: SweepSettings, init_loss, trace, init_observables) -> dict:
  """One checkpoint's record from its host outputs (trace leaves [C, T])."""
  summary = sgld.summarize(trace, float(init_loss), nbeta=settings.nbeta,
                           num_burnin=settings.num_burnin, thin=settings.thin)
  record = result_record(step, summary, trace, settings.min_good_fraction)
  if init_observables is not None:
    record.update(observable_record(trace, init_observables, settings))
  if record["status"] != "ok":
    for message in record["warnings"]:
      tqdm.write(f"warning: step {step}: {message}")
  return record


def observable_record(trace, init_observables, settings: SweepSettings) -> dict:
  """The observables' part of a record (:func:`jaxdev.sgld.summarize_observables`):
  ``observable_llc`` [O] (the LLC split over the observables; for ``"positions"`` the
  per-position LLCs, which average to ``llc_mean``), ``observable_llc_std`` [O] (over chains,
  ddof = 1), ``observable_llc_per_chain`` [C, O], ``observable_init`` [O] (φ_n(w*)) and
  ``susceptibility`` [O] (χ = −nβ·Cov(φ, L_m), pooled kept draws, ddof = 1)."""
  out = sgld.summarize_observables(trace.observables, trace.loss, init_observables,
                                   nbeta=settings.nbeta, num_burnin=settings.num_burnin,
                                   thin=settings.thin)
  per_chain = out["llc_per_chain"]
  good = per_chain[np.isfinite(per_chain).all(axis=1)]
  std = good.std(axis=0, ddof=1) if len(good) >= 2 else np.full(per_chain.shape[1], np.nan)
  return {"observable_llc": out["llc"], "observable_llc_std": std,
          "observable_llc_per_chain": per_chain, "observable_init": out["init"],
          "susceptibility": out["susceptibility"]}


def sweep(workdir: str, settings: SweepSettings, *, steps: Sequence[int] | None = None,
          checkpoints_per_batch: int = 8, mesh=None, name: str = "default",
          show_progress: bool = True) -> SweepResult:
  """Estimates the LLC at every checkpoint of the run in ``workdir``.

  The checkpoints are mapped by :func:`jaxdev.engine.map_checkpoints` (planning, groups,
  records, resumption) with the estimator of :func:`build_estimator`.

  Args:
    workdir: a run directory written by :func:`jaxdev.train.train`.
    settings: SGLD settings (see :class:`SweepSettings`).
    steps: checkpoint steps to estimate (default: all of them).
    checkpoints_per_batch: checkpoints sampled together in one call (rounded up to a multiple
      of the mesh's "ckpt" axis; the last group is padded by repeating a checkpoint).
    mesh: a ("ckpt", "chain") mesh; default :func:`jaxdev.distributed.sweep_mesh` over all devices.
    name: the sweep's name; results go to ``RunDir(workdir).llc(name)``.
    show_progress: draw a tqdm bar (process 0 only).

  Returns:
    A SweepResult. Checkpoints that cannot be read are reported in ``failed`` and skipped;
    records found damaged are reported (with a warning) in ``damaged`` and recomputed.

  Raises:
    SweepError: no checkpoints, or settings that differ from the sweep's record
      (:class:`jaxdev.engine.SettingsConflictError`).
    RunDirError: no such run, or a damaged config or settings file.
  """
  run, task, abstract, selectors, observables, settings = _sweep_context(workdir, settings)
  plan = _plan(run, settings, name, steps)
  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh

  def build():
    data, keys = sampling_data(task, settings, mesh), chain_keys(settings, mesh)
    estimate = build_estimator(task.loss_fn, settings, mesh, selectors, observables=observables)
    return lambda stacked: estimate(stacked, keys, data)

  chain_steps = settings.num_chains * settings.num_draws
  result = engine.map_checkpoints(
      plan, build, abstract_params=abstract,
      to_record=lambda step, output: _record(step, settings, *output), mesh=mesh,
      checkpoints_per_batch=checkpoints_per_batch,
      desc=f"llc[{name}]", show_progress=show_progress, rate=("chain_steps_per_s", chain_steps))
  return SweepResult(result.out_dir, result.done, result.skipped, result.failed, result.seconds,
                     len(result.done) * chain_steps / max(result.seconds, 1e-9), result.damaged)


def sweep_restricted(workdir: str, settings: SweepSettings, restricted: Sequence[tuple[str, str]],
                     *, steps: Sequence[int] | None = None, checkpoints_per_batch: int = 8,
                     mesh=None, name: str = "default", restriction_map: str = "map",
                     show_progress: bool = True) -> dict:
  """Weight-restricted LLCs of R restrictions at every checkpoint, in one compiled program.

  Restriction r is the sweep ``NAME-SUFFIX_r`` with ``settings`` but the mask ``MASK_r``: its
  records and settings are those :func:`sweep` would write for ``replace(settings, mask=MASK_r)``
  under that name (a later :func:`sweep` of one of them finds it done), and its numbers equal
  that sweep's to float32 rounding (another compiled program: XLA may fuse and round
  differently). The R restrictions share the chain keys (the same
  minibatches and noise draws, each masked by its own restriction), the sampling data, L_n(w*)
  and the checkpoint reads; each restriction's trace is [C, T] as in a single sweep.

  Args:
    workdir, steps, checkpoints_per_batch, mesh, show_progress: as for :func:`sweep`.
    settings: the SGLD settings shared by every restriction (its own mask is replaced).
    restricted: [(suffix, mask)], e.g. :func:`restrictions`' output.
    name: the main sweep's name; restriction r goes to ``RunDir(workdir).llc(f"{name}-{suffix}")``.
    restriction_map: ``"map"`` (one after the other inside the program) or ``"vmap"`` (one
      batched computation over R; see :func:`build_estimator`).

  Returns:
    {sweep name: :class:`SweepResult`} in the order of ``restricted`` (their ``seconds`` is the
    wall time of the one computation).

  Raises:
    as :func:`sweep`; ConfigError for an empty ``restricted`` or a mask that selects nothing,
    before any file.
  """
  restricted = list(restricted)
  if not restricted:
    raise ConfigError("sweep_restricted needs at least one restriction")
  run, task, abstract, selectors, observables, shared = _sweep_context(
      workdir, dataclasses.replace(settings, mask=None))
  each = [dataclasses.replace(shared, mask=mask).resolved(abstract, selectors)
          for _, mask in restricted]  # every mask checked before any file
  names = [f"{name}-{suffix}" for suffix, _ in restricted]
  plans = [_plan(run, s, n, steps) for s, n in zip(each, names)]
  plan = engine.combine(plans)
  mesh = distributed.sweep_mesh(settings.num_chains) if mesh is None else mesh

  def build():
    data, keys = sampling_data(task, each[0], mesh), chain_keys(each[0], mesh)
    estimate = build_estimator(task.loss_fn, each[0], mesh, selectors, observables=observables,
                               masks=[s.mask for s in each], restriction_map=restriction_map)
    return lambda stacked: estimate(stacked, keys, data)

  def to_records(step, output):
    init_loss, trace, init_observables = output
    return [_record(step, s, init_loss, jax.tree.map(lambda x, r=r: x[r], trace),
                    init_observables) for r, s in enumerate(each)]

  chain_steps = settings.num_chains * settings.num_draws
  result = engine.map_checkpoints(
      plan, build, abstract_params=abstract, to_record=to_records, mesh=mesh,
      checkpoints_per_batch=checkpoints_per_batch, desc=f"llc[{name}-*] x{len(restricted)}",
      show_progress=show_progress, rate=("chain_steps_per_s", chain_steps * len(restricted)))
  out = {}
  for sweep_name, part in zip(names, plans):
    done = [s for s in result.done if s in part.todo]
    out[sweep_name] = SweepResult(part.records.path, done, list(part.skipped),
                                  dict(result.failed), result.seconds,
                                  len(done) * chain_steps / max(result.seconds, 1e-9),
                                  dict(part.damaged))
  return out


def restrictions(spec: str, model_config) -> list[tuple[str, str]]:
  """The weight restrictions a sweep config names, as (sweep-name suffix, mask) pairs.

  Args:
    spec: ``""`` (none), ``"heads"`` (each attention head of each layer: ``head:L.H``),
      ``"layers"`` (each layer: ``layer:L``), or masks separated by semicolons (each a mask of
      :class:`SweepSettings`, e.g. ``"head:1.2;layer:0;*W_E*"``).
    model_config: the run's model section (``num_layers``, ``num_heads``), for "heads" and "layers".

  Returns:
    ``[(suffix, mask)]`` in order; the suffix names the sweep ``NAME-SUFFIX`` (letters, digits,
    ``.``, ``_`` and ``+`` only; e.g. ``head1.2`` for ``head:1.2``).

  Raises:
    ConfigError: an empty mask between semicolons, or two restrictions with one suffix.
  """
  spec = (spec or "").strip()
  if not spec:
    return []
  if spec == "heads":
    masks = [f"head:{l}.{h}" for l in range(model_config.num_layers)
             for h in range(model_config.num_heads)]
  elif spec == "layers":
    masks = [f"layer:{l}" for l in range(model_config.num_layers)]
  else:
    masks = [m.strip() for m in spec.split(";")]
    if not all(masks):
      raise ConfigError(f"sweep.restrictions: an empty mask in {spec!r} (masks are separated by "
                        "';')")
  out = []
  for mask in masks:
    suffix = re.sub(r"[^A-Za-z0-9._+]", "", mask.replace(",", "+").replace("*", "_"))
    if any(suffix == s for s, _ in out) or not suffix:
      raise ConfigError(f"sweep.restrictions: {mask!r} gives the sweep name suffix {suffix!r} "
                        "twice or empty; name the restrictions apart")
    out.append((suffix, mask))
  return out


def every_nth(steps: Sequence[int], every: int) -> list[int]:
  """Every ``every``-th of the sorted ``steps`` from the first, and the last one."""
  steps = sorted(int(s) for s in steps)
  if every < 1:
    raise ConfigError(f"sweep.restriction_every must be >= 1, got {every}")
  chosen = steps[::every]
  if steps and chosen[-1] != steps[-1]:
    chosen.append(steps[-1])
  return chosen


def result_record(step: int, summary: "sgld.LLCResult", trace,
                  min_good_fraction: float = 0.5) -> dict:
  """The arrays stored per checkpoint (see the module docstring).

  Besides the summary's numbers: ``num_good`` (surviving chains), ``status`` ("ok", "failed",
  "outliers", see :func:`chain_status`) and ``warnings`` (a string array: the summary's and the
  status's). A "failed" checkpoint stores llc_mean = llc_std = NaN (not estimated). From the
  trace: ``distance_trace`` [C, T] (‖w_t − w*‖); ``rhat``, ``ess_bulk`` and ``ess_mean`` of the
  kept loss draws of the healthy chains (:mod:`jaxdev.sgld.diagnostics`); with MALA (``compute_mala``)
  ``mala_acceptance`` [C]: each chain's mean acceptance probability over its kept draws (those
  of the estimate; draw 0 has none), NaN for a failed chain. Over the surviving chains it
  averages to ``estimate_llc``'s ``diagnostics["mala_mean"]``.
  """
  num_good, status, status_warnings = chain_status(summary.llc_per_chain, min_good_fraction)
  failed = status == "failed"
  record = dict(
      step=np.int64(step),
      llc_mean=np.float64(np.nan if failed else summary.llc_mean),
      llc_std=np.float64(np.nan if failed else summary.llc_std),
      llc_per_chain=np.asarray(summary.llc_per_chain),
      loss_trace=np.asarray(summary.loss_trace),
      init_loss=np.float64(summary.init_loss),
      nbeta=np.float64(summary.nbeta),
      num_failed=np.int64(summary.num_failed),
      failed_chains=np.asarray(summary.failed_chains),
      num_good=np.int64(num_good),
      status=np.str_(status),
      warnings=np.array(list(summary.warnings) + status_warnings, dtype=np.str_).reshape(-1),
  )
  if summary.convergence is not None:
    record.update({name: np.float64(value) for name, value in
                   summary.convergence._asdict().items() if name in CONVERGENCE_KEYS})
  if hasattr(trace, "distance"):
    record["distance_trace"] = np.asarray(trace.distance)
  mala = getattr(trace, "mala", None)
  if mala is not None:
    kept = np.asarray(mala, np.float64)[:, summary.num_burnin::summary.thin]
    per_chain = sgld_summary.nanmean(kept, axis=1)
    record["mala_acceptance"] = np.where(np.asarray(summary.failed_chains), np.nan, per_chain)
  return record


#: What :func:`load_results` needs of a record by default.
RESULT_KEYS = ("step", "llc_mean", "llc_std", "init_loss", "num_failed")


def load_results(out_dir: str, keys: Sequence[str] = RESULT_KEYS,
                 required: Sequence[str] = RECORD_KEYS) -> dict:
  """Stacked per-checkpoint results of a sweep directory, sorted by step ({} if none): ``keys``
  (default step, llc_mean, llc_std, init_loss, num_failed), and num_good, status and warnings (a
  list of lists; see :func:`record_status`). A "failed" checkpoint has llc_mean = llc_std = NaN.

  Args:
    out_dir: the sweep's record directory.
    keys: the arrays to stack.
    required: the members every record must have (it is damaged otherwise); must include
      llc_per_chain and num_failed.

  Raises:
    RunDirError: a record is damaged (the message names it; rerunning the sweep recomputes it).
  """
  records = rundir.RecordDir(out_dir)
  required = tuple(dict.fromkeys(tuple(required) + tuple(keys)))
  read = [records.read(step, required) for step in records.steps()]
  if not read:
    return {}
  results = {k: np.array([r[k] for r in read]) for k in keys}
  verdicts = [record_status(r) for r in read]
  results["num_good"] = np.array([v[0] for v in verdicts], np.int64)
  results["status"] = np.array([v[1] for v in verdicts], dtype=np.str_)
  results["warnings"] = [v[2] for v in verdicts]
  failed = results["status"] == "failed"
  results["llc_mean"] = np.where(failed, np.nan, results["llc_mean"])  # records before statuses
  results["llc_std"] = np.where(failed, np.nan, results["llc_std"])
  return results


def format_table(workdir: str, name: str = "default", max_rows: int = 20) -> str:
  """A short text table of step, LLC ± std and test loss (evenly subsampled to ``max_rows``)."""
  run = rundir.RunDir(workdir)
  results = load_results(run.llc(name).path)
  if not results:
    return "(no LLC results yet)"
  evals = {r["step"]: r["loss"] for r in run.metrics("eval")}
  n = len(results["step"])
  rows = np.unique(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int))
  lines = [f"{'step':>9}  {'LLC':>9}  {'± std':>7}  {'test loss':>9}  failed  status"]
  for i in rows:
    step = int(results["step"][i])
    loss = evals.get(step)
    loss_text = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
    lines.append(f"{step:>9}  {results['llc_mean'][i]:9.3f}  {results['llc_std'][i]:7.3f}  "
                 f"{loss_text}  {int(results['num_failed'][i]):>6}  {results['status'][i]}")
  bad = [(int(s), str(t)) for s, t in zip(results["step"], results["status"]) if t != "ok"]
  if bad:
    lines.append("not ok: " + ", ".join(f"step {s} {t}" for s, t in bad))
  return "\n".join(lines)


def calibrate_checkpoint(workdir: str, step: int | None, *, step_sizes, nbetas, gammas,
                         num_chains: int, num_draws: int, batch_size: int,
                         num_sampling_examples: int, sampling_seed: int = 3_000, seed: int = 0):
  """Runs :func:`jaxdev.sgld.calibrate` at one checkpoint of a run (default: the last).

  Returns:
    (step, CalibrationResult).
  """
  config = load_run_config(workdir)
  ckpt_dir = rundir.RunDir(workdir).checkpoints
  available = checkpoints.list_steps(ckpt_dir)
  if not available:
    raise SweepError(f"{workdir} holds no checkpoints")
  step = available[-1] if step is None else int(step)
  if step not in available:
    raise SweepError(f"{workdir} has no checkpoint at step {step} (nearest: "
                     f"{min(available, key=lambda s: abs(s - step))})")
  task = tasks_lib.make_task(config)
  with checkpoints.ParamsReader(ckpt_dir, jax.eval_shape(task.init, jax.random.key(0))) as reader:
    params = reader.read(step)
  data = task.sampling_data(sampling_seed, num_sampling_examples)
  return step, sgld.calibrate(task.loss_fn, params, data, jax.random.key(seed),
                              step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
                              num_chains=num_chains, num_draws=num_draws, batch_size=batch_size)
