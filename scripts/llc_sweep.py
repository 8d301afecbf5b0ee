"""The main job: LLC at every checkpoint of a run, then stages and figures.

With no arguments it trains the quick regression run into runs/quick (or resumes it), sweeps it
with configs/llc.py:quick, and writes runs/quick/figures/ and a summary table:

  python scripts/llc_sweep.py
  python scripts/llc_sweep.py --workdir runs/lr-seed0 --config configs/llc.py:paper
  python scripts/llc_sweep.py --workdir runs/lr --seeds 0,1,2,3,4 \
      --train_config configs/regression.py:paper --config configs/llc.py:paper

With --seeds, each seed is a run of its own in WORKDIR/seedN (the training config's seed set to
N). Before work starts the job prints its estimated device-hours from a short timed warm-up
(--estimate_only prints them and stops). Killed at any moment, the same command continues where
it stopped.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_path(__file__, "configs", "llc.py:quick"),
    "LLC sweep config (file.py:variant); override fields with --config.sgld.FIELD=VALUE.")
_TRAIN_CONFIG = config_flags.DEFINE_config_file(
    "train_config", cli.repo_path(__file__, "configs", "regression.py:quick"),
    "Training config used when the run in --workdir is missing or unfinished.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quick", "Run directory holding (or to hold) the run.")
_TRAIN = flags.DEFINE_bool("train", True, "Train (or resume) the run first if it is unfinished.")
_STEPS = flags.DEFINE_list("steps", None, "Only these checkpoint steps (default: all).")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Detect stages and draw figures at the end.")
_SEEDS = flags.DEFINE_list("seeds", None, "Train and sweep one run per seed in WORKDIR/seedN.")
_ESTIMATE = flags.DEFINE_bool("estimate", True, "Print estimated device-hours before starting.")
_ESTIMATE_ONLY = flags.DEFINE_bool("estimate_only", False, "Print the estimate and stop.")


def _runs(train_config):
  """(workdir, training config) of each run this job covers."""
  if _SEEDS.value is None:
    return [(_WORKDIR.value, train_config)]
  runs = []
  for seed in _SEEDS.value:
    config = train_config.copy_and_resolve_references()
    config.seed = int(seed)
    runs.append((os.path.join(_WORKDIR.value, f"seed{int(seed)}"), config))
  return runs


def _print_estimates(runs, settings, config, is_main):
  """Estimates for the training and sweeping still to do (every process takes part)."""
  # pylint: disable=import-outside-toplevel
  from jaxdev import costs, llc, train
  untrained = [c for w, c in runs if not train.is_complete(w)] if _TRAIN.value else []
  remaining, model_config = 0, None
  for workdir, run_config in runs:
    if os.path.exists(os.path.join(workdir, "config.json")):
      run_config = llc.load_run_config(workdir)
    elif not _TRAIN.value:
      continue  # no run and none to train: the sweep reports it
    model_config = model_config or run_config
    steps = train.checkpoint_steps(run_config.optim.num_steps, run_config.checkpoint.num_log,
                                   run_config.checkpoint.num_linear)
    out_dir = os.path.join(workdir, "llc", config.sweep.name)
    remaining += sum(not os.path.exists(llc.result_path(out_dir, int(s))) for s in steps)
  records = []
  if untrained:
    record = costs.training_estimate(untrained[0])
    for key in ("num_steps", "wall_hours", "device_hours"):
      record[key] *= len(untrained)
    records.append(record)
  if remaining:
    records.append(costs.sweep_estimate(model_config, settings, num_checkpoints=remaining,
                                        checkpoints_per_batch=config.sweep.checkpoints_per_batch))
  if is_main:
    for record in records:
      print(costs.format_estimate(record) + (f" for {len(runs)} runs" if len(runs) > 1 else ""),
            flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # pylint: disable=import-outside-toplevel
  from jaxdev import distributed
  distributed.maybe_initialize()
  from jaxdev import llc
  from jaxdev import train

  config = _CONFIG.value
  settings = llc.SweepSettings.from_config(config.sgld)
  is_main = distributed.is_main_process()
  runs = _runs(_TRAIN_CONFIG.value)
  if _ESTIMATE.value or _ESTIMATE_ONLY.value:
    _print_estimates(runs, settings, config, is_main)
    if _ESTIMATE_ONLY.value:
      return 0
  status = 0
  for workdir, train_config in runs:
    status = max(status, _train_and_sweep(workdir, train_config, settings, config, is_main))
  return status


def _train_and_sweep(workdir, train_config, settings, config, is_main):
  # pylint: disable=import-outside-toplevel
  from jaxdev import llc
  from jaxdev import train
  if not train.is_complete(workdir) and _TRAIN.value:
    if is_main:
      print(f"training {workdir} ...")
    train.train(train_config, workdir)
  steps = None if _STEPS.value is None else [int(s) for s in _STEPS.value]
  result = llc.sweep(workdir, settings, steps=steps, name=config.sweep.name,
                     checkpoints_per_batch=config.sweep.checkpoints_per_batch)
  if not is_main:
    return 0
  print(f"{workdir}: LLC sweep {config.sweep.name!r}: {len(result.steps_done)} checkpoints "
        f"estimated, {len(result.steps_skipped)} already done "
        f"({result.chain_steps_per_second:.0f} chain-steps/s)")
  print(llc.format_table(workdir, config.sweep.name))
  if _ANALYZE.value:
    from jaxdev.analysis import run as analysis
    summary = analysis.analyze_run(workdir, sweep=config.sweep.name)
    print(analysis.format_summary(summary))
  if result.failed:
    for step, reason in sorted(result.failed.items()):
      print(f"error: checkpoint {step} skipped: {reason}", file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
