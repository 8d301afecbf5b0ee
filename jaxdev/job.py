"""The main job as library functions: train → LLC sweep → stages and figures, over seeds.

``main_job(train_config, sweep_config, workdir)`` is what ``scripts/llc_sweep.py`` runs, and what
a notebook or test calls in-process. With ``seeds`` each seed is a run of its own in
``WORKDIR/seedN`` (the training config's seed set to N). Before work starts the job prints its
estimated device-hours from a short timed warm-up of the programs still to run
(``estimate_only`` prints them and stops). Every phase resumes: a killed job run again continues
where it stopped, and finished phases are not redone.

A run is only trained into a new directory when the caller means it (``train=True``, or the job's
default workdir, or a training config chosen explicitly); otherwise a missing workdir is an
error before any work. ``train_job`` is the same for training alone (``scripts/train.py``).

Output: the jobs print their progress and results on process 0 (estimates, a line per run, the
LLC table, the analysis summary); checkpoints that could not be read are reported on stderr and
make the exit status 3.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Sequence

import jax

from jaxdev import distributed
from jaxdev import llc
from jaxdev import rundir
from jaxdev import tasks as tasks_lib
from jaxdev import train as train_lib
from jaxdev.errors import ConfigError, RunDirError

DEFAULT_WORKDIR = os.path.join("runs", "quick")


@dataclasses.dataclass
class RunResult:
  """One run of the job: its workdir, what training and the sweep did, the analysis summary."""

  workdir: str
  trained: train_lib.TrainResult | None
  sweep: llc.SweepResult
  analysis: dict | None = None
  restricted: dict = dataclasses.field(default_factory=dict)  # sweep name -> SweepResult


@dataclasses.dataclass
class JobResult:
  """What the job did. ``exit_status`` is 0, or 3 when some checkpoints could not be read."""

  estimates: list
  runs: list
  exit_status: int = 0


def _costs():
  """The cost-estimate module (imported when needed: it compiles the job's programs)."""
  from jaxdev.measure import costs  # pylint: disable=import-outside-toplevel
  return costs


def run_analysis(workdir: str, *, sweep: str = "default", indicators: bool = True,
                 verbose: bool = True, **analysis_options) -> dict:
  """Stages and forms (:func:`jaxdev.analysis.run.analyze_run`), then the cheap indicators.

  The indicators (:func:`jaxdev.indicators.run.evaluate_run` with ``which="cheap"``) are
  evaluated at every checkpoint the run holds (resumable: records already written are kept) and
  drawn with the stages just found; a run without checkpoints gets a note instead.

  Args:
    workdir: the run directory.
    sweep: which LLC sweep the stages come from.
    indicators: also evaluate and draw the cheap indicators.
    verbose: print the summary.
    **analysis_options: passed to ``analyze_run`` (sigma_schedule, ed_max_step, ...).

  Returns:
    ``analyze_run``'s summary; with indicators, its "notes" include their account.
  """
  # pylint: disable=import-outside-toplevel
  from jaxdev.analysis import run as analysis_lib
  summary = analysis_lib.analyze_run(workdir, sweep=sweep, **analysis_options)
  if indicators:
    if os.path.isdir(rundir.RunDir(workdir).checkpoints):
      from jaxdev.indicators import run as indicators_lib
      result = indicators_lib.evaluate_run(workdir, which="cheap")
      summary["notes"].append(indicators_lib.format_result(result))
      summary["figures"] += list(result.figures)
    else:
      summary["notes"].append("no checkpoints: indicators skipped")
  if verbose:
    print(analysis_lib.format_summary(summary))
  return summary


def restriction_sweeps(sweep_config, train_config) -> list[tuple[str, str]]:
  """The weight-restricted sweeps of ``sweep.restrictions`` for a run of ``train_config``:
  [(name suffix, mask)] (:func:`jaxdev.llc.restrictions`)."""
  return llc.restrictions(sweep_config.sweep.get("restrictions", ""), train_config.model)


def restriction_steps(train_config, sweep_config, steps=None) -> list[int]:
  """The checkpoints the restricted sweeps estimate: the steps ``sweep.restriction_steps`` names
  (comma-separated) or, when it is empty, every ``sweep.restriction_every``-th of the run's
  checkpoint steps (and its last); within ``steps`` when given.

  Raises:
    ConfigError: ``sweep.restriction_steps`` names a step that is not a checkpoint of the run.
  """
  every = int(sweep_config.sweep.get("restriction_every", 1))
  planned = train_lib.scheduled_checkpoints(train_config)
  named = str(sweep_config.sweep.get("restriction_steps", "") or "").strip()
  if named:
    chosen = sorted(set(parse_ints(named.split(","), "sweep.restriction_steps")))
    unknown = sorted(set(chosen) - set(planned))
    if unknown:
      raise ConfigError(f"sweep.restriction_steps {unknown[:5]} are not checkpoint steps of the "
                        "run")
  else:
    chosen = llc.every_nth(planned, every)
  if steps is not None:
    wanted = {int(s) for s in steps}
    chosen = [s for s in chosen if s in wanted]
  return chosen


def seed_runs(train_config, workdir: str, seeds: Sequence[int] | None = None) -> list:
  """[(workdir, training config)] of the runs a job covers: ``workdir`` itself, or one
  ``workdir/seedN`` per seed with ``config.seed = N``."""
  if seeds is None:
    return [(workdir, train_config)]
  runs = []
  for seed in seeds:
    config = train_config.copy_and_resolve_references()
    config.seed = int(seed)
    runs.append((os.path.join(workdir, f"seed{int(seed)}"), config))
  return runs


def parse_ints(values, what: str) -> list[int] | None:
  """``values`` (ints or strings) as a list of ints >= 0 (None stays None).

  Raises:
    ConfigError: the list is empty, or a value is not a whole number >= 0; ``what`` names the
      list in the message.
  """
  if values is None:
    return None
  if not len(values):
    raise ConfigError(f"{what} is empty: give at least one number, or leave it out")
  parsed = []
  for value in values:
    try:
      parsed.append(int(value))
    except (TypeError, ValueError):
      raise ConfigError(f"{what} must be whole numbers, got {value!r}") from None
    if parsed[-1] < 0:
      raise ConfigError(f"{what} must be >= 0, got {value!r}")
  return parsed


def saved_configs(runs, chosen: bool = False) -> list:
  """``runs`` with each run already in its workdir paired with its own saved training config.

  A run is resumed, estimated and swept with the config it was started with, whatever training
  config the job was given; when the caller chose that config explicitly (``chosen``) and it
  differs from a run's saved one, that is an error before any work.

  Raises:
    RunDirError: ``chosen`` and a run holds another config, or a saved config is damaged.
  """
  out = []
  for workdir, config in runs:
    run = rundir.RunDir(workdir)
    if run.is_run:
      if chosen:
        run.require_config(json.loads(config.to_json()))
      config = llc.load_run_config(workdir)
    out.append((workdir, config))
  return out


def _to_train(runs, train: bool | None, new_runs: bool) -> list[bool]:
  """For each run, whether the job trains it; a missing run it may not create is an error."""
  out = []
  for workdir, _ in runs:
    run = rundir.RunDir(workdir)
    origin = run.identity()["origin"] if run.is_run and not run.is_complete else None
    if origin not in (None, "trained"):
      raise RunDirError(f"{workdir} holds an import that did not finish ({origin}); run the "
                        "import command again to finish it")
    if run.is_complete or train is False:
      out.append(False)
    elif run.is_run or train or new_runs:
      out.append(True)
    else:
      raise RunDirError(f"run directory {workdir} does not exist; pass --train to train a new "
                        "run there (or give --train_config)")
  return out


def estimate_costs(runs, to_train, settings: llc.SweepSettings, sweep_config,
                   steps: Sequence[int] | None = None) -> list[dict]:
  """Cost estimates (see the costs module) for the training and sweeping still to do.

  Every process takes part. Runs are (workdir, training config) pairs, a run already there
  paired with its saved config (as :func:`saved_configs` gives them); ``to_train`` says which
  will be trained; ``steps`` limits the sweep to those checkpoints. A run that is neither there
  nor to be trained is left out (the sweep reports it).
  """
  costs = _costs()
  untrained = [(workdir, config) for (workdir, config), todo in zip(runs, to_train) if todo]
  remaining, model_config = [], None  # checkpoints still to estimate, one count per sweep
  for (workdir, run_config), todo in zip(runs, to_train):
    run = rundir.RunDir(workdir)
    if not (run.is_run or todo):
      continue
    model_config = model_config or run_config
    checkpoint_steps = train_lib.scheduled_checkpoints(run_config)
    records = run.llc(sweep_config.sweep.name)
    wanted = set(int(s) for s in (checkpoint_steps if steps is None else steps))
    remaining.append(sum(not records.has(int(s)) for s in checkpoint_steps if int(s) in wanted))
    chosen = restriction_steps(run_config, sweep_config, steps)
    for suffix, _ in restriction_sweeps(sweep_config, run_config):
      restricted = run.llc(f"{sweep_config.sweep.name}-{suffix}")
      remaining.append(sum(not restricted.has(s) for s in chosen))
  remaining = [n for n in remaining if n]
  estimates = []
  if untrained:
    # One timed program (the runs share a model) for the steps all of them still have to run.
    num_steps = sum(steps_to_train(workdir, config) for workdir, config in untrained)
    record = costs.training_estimate(untrained[0][1], num_steps=num_steps)
    estimates.append(record)
  if remaining:
    estimates.append(costs.sweep_estimate(
        model_config, settings, num_checkpoints=remaining,
        checkpoints_per_batch=sweep_config.sweep.checkpoints_per_batch))
  return estimates


def steps_to_train(workdir: str, config) -> int:
  """Optimizer steps of ``config`` after the newest checkpoint in ``workdir`` (all without one):
  what training resumes to run."""
  from jaxdev import checkpoints  # pylint: disable=import-outside-toplevel
  steps = checkpoints.list_steps(rundir.RunDir(workdir).checkpoints)
  return max(config.optim.num_steps - (steps[-1] if steps else 0), 0)


def _print_estimates(estimates, num_runs: int) -> None:
  costs = _costs()
  for record in estimates:
    print(costs.format_estimate(record) + (f" for {num_runs} runs" if num_runs > 1 else ""),
          flush=True)


def run_one(workdir: str, train_config, sweep_config, *, train: bool, steps=None,
            analyze: bool = True, indicators: bool = True, verbose: bool = True) -> RunResult:
  """Trains (if ``train`` and unfinished), sweeps and analyses one run (with the cheap
  indicators unless not ``indicators``); prints on process 0."""
  is_main = distributed.is_main_process()
  show = verbose and is_main
  trained = None
  if train and not train_lib.is_complete(workdir):
    if show:
      print(f"training {workdir} ...")
    trained = train_lib.train(train_config, workdir, show_progress=verbose)
  settings = llc.SweepSettings.from_config(sweep_config.sgld)
  name = sweep_config.sweep.name
  result = llc.sweep(workdir, settings, steps=steps, name=name,
                     checkpoints_per_batch=sweep_config.sweep.checkpoints_per_batch,
                     show_progress=verbose)
  restricted = {}
  restrictions = restriction_sweeps(sweep_config, train_config)
  if restrictions:  # every restriction at every chosen checkpoint, in one program
    restricted = llc.sweep_restricted(
        workdir, settings, restrictions, name=name,
        steps=restriction_steps(train_config, sweep_config, steps),
        checkpoints_per_batch=sweep_config.sweep.checkpoints_per_batch,
        restriction_map=sweep_config.sweep.get("restriction_map", "map"), show_progress=verbose)
  out = RunResult(workdir, trained, result, restricted=restricted)
  if not is_main:
    return out
  if show:
    print(f"{workdir}: LLC sweep {name!r}: {len(result.steps_done)} checkpoints estimated, "
          f"{len(result.steps_skipped)} already done "
          f"({result.chain_steps_per_second:.0f} chain-steps/s)")
    for sweep_name, swept in restricted.items():
      print(f"{workdir}: LLC sweep {sweep_name!r}: {len(swept.steps_done)} checkpoints "
            f"estimated, {len(swept.steps_skipped)} already done")
    if restricted:  # one program: each sweep's rate is its share of the program's time
      together = sum(s.chain_steps_per_second for s in restricted.values())
      print(f"{workdir}: the {len(restricted)} restricted sweeps ran as one program "
            f"({together:.0f} chain-steps/s together)")
    print(llc.format_table(workdir, name))
  if analyze:
    out.analysis = run_analysis(workdir, sweep=name, indicators=indicators, verbose=show,
                                restricted=tuple(restricted))
  if show:
    for step, reason in sorted(result.failed.items()):
      print(f"error: checkpoint {step} skipped: {reason}", file=sys.stderr)
  return out


def main_job(train_config, sweep_config, workdir: str = DEFAULT_WORKDIR, *,
             seeds: Sequence[int] | None = None, steps: Sequence[int] | None = None,
             train: bool | None = None, train_config_chosen: bool = False, analyze: bool = True,
             indicators: bool = True, estimate: bool = True, estimate_only: bool = False,
             verbose: bool = True) -> JobResult:
  """Trains (or resumes), sweeps and analyses every run of the job.

  Args:
    train_config: training ConfigDict (``configs/regression.py`` or ``configs/language.py``),
      used for runs still to train; a run already in its workdir keeps its own saved config.
    sweep_config: ``configs/llc.py`` ConfigDict (``sgld`` settings and ``sweep`` name and batching).
    workdir: the run directory (with ``seeds``: the folder of the ``seedN`` runs).
    seeds: one run per seed (default: one run, with the training config's seed).
    steps: checkpoint steps to estimate (default: all); whole numbers (strings are parsed).
    train: True trains (or resumes) every unfinished run, creating missing ones; False never
      trains; None (default) resumes unfinished runs and creates a missing one only in
      :data:`DEFAULT_WORKDIR` or when ``train_config_chosen``.
    train_config_chosen: the caller chose ``train_config`` explicitly (a new run may be made).
    analyze: detect stages and draw figures at the end of each run.
    indicators: with ``analyze``, also evaluate the cheap indicators and draw their panels.
    estimate: print the estimated device-hours of the work still to do before starting.
    estimate_only: print the estimate and stop (nothing is written).
    verbose: print progress and results (process 0); False prints nothing.

  Returns:
    A JobResult.

  Raises:
    UserError (ConfigError, RunDirError, SweepError, ...): bad settings, steps or directories,
      found before any expensive work where they can be.
  """
  settings = llc.SweepSettings.from_config(sweep_config.sgld)
  settings.resolved()  # checks the settings before any work
  steps = parse_ints(steps, "checkpoint steps")
  runs = saved_configs(seed_runs(train_config, workdir, parse_ints(seeds, "seeds")),
                      chosen=train_config_chosen)
  new_runs = train_config_chosen or (
      os.path.normpath(workdir) == os.path.normpath(DEFAULT_WORKDIR))
  to_train = _to_train(runs, train, new_runs)
  for (_, config), todo in zip(runs, to_train):
    if todo:
      train_lib.validate_config(config)
    masks = [settings.mask] if settings.mask is not None else []
    masks += [mask for _, mask in restriction_sweeps(sweep_config, config)]
    llc.every_nth([], int(sweep_config.sweep.get("restriction_every", 1)))  # checks the value
    restriction_steps(config, sweep_config)  # checks sweep.restriction_steps
    llc.check_restriction_map(sweep_config.sweep.get("restriction_map", "map"), "sweep.")
    if masks or settings.observables is not None:  # every mask must select weights of this
      model = tasks_lib.model_for(config)          # model and the observable exist, before
      abstract = jax.eval_shape(model.init, jax.random.key(0))  # training
      settings.observable_fn(model)
      for mask in masks:
        dataclasses.replace(settings, mask=mask).resolved(abstract, model.mask_selectors)
  estimates = []
  if estimate or estimate_only:
    estimates = estimate_costs(runs, to_train, settings, sweep_config, steps)
    if verbose and distributed.is_main_process():
      _print_estimates(estimates, len(runs))
    if estimate_only:
      return JobResult(estimates, [])
  results = [run_one(w, c, sweep_config, train=todo, steps=steps, analyze=analyze,
                     indicators=indicators, verbose=verbose) for (w, c), todo in zip(runs, to_train)]
  failed = any(r.sweep.failed or any(s.failed for s in r.restricted.values()) for r in results)
  return JobResult(estimates, results, 3 if failed and distributed.is_main_process() else 0)


def train_job(config, workdir: str, *, estimate: bool = True, estimate_only: bool = False,
              verbose: bool = True):
  """Trains ``config`` into ``workdir`` (resuming a partial run; a finished one is left as is).

  Prints the estimated device-hours first (when ``estimate`` and the run is unfinished, or
  ``estimate_only``, which then stops) and a closing line, on process 0.

  Returns:
    The TrainResult, or None with ``estimate_only``.
  """
  show = verbose and distributed.is_main_process()
  if estimate_only or (estimate and not train_lib.is_complete(workdir)):
    costs = _costs()
    record = costs.training_estimate(config, num_steps=steps_to_train(workdir, config))
    if show:
      print(costs.format_estimate(record), flush=True)
    if estimate_only:
      return None
  result = train_lib.train(config, workdir, show_progress=verbose)
  if show and result.status == "already finished":
    print(f"{workdir} already holds the finished run ({result.final_step} steps); nothing to do.")
  elif show:
    print(f"finished {result.final_step} steps in {workdir}")
  return result
