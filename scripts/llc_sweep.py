"""The main job: LLC at every checkpoint of a run, then stages and figures.

With no arguments it trains the quick regression run into runs/quick (or resumes it), sweeps it
with configs/llc.py:quick, and writes runs/quick/figures/ and a summary table:

  python scripts/llc_sweep.py
  python scripts/llc_sweep.py --workdir runs/lr-seed0 --config configs/llc.py:paper

Killed at any moment, the same command continues where it stopped.
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # pylint: disable=import-outside-toplevel
  from jaxdev import distributed
  distributed.maybe_initialize()
  from jaxdev import llc
  from jaxdev import train

  workdir = _WORKDIR.value
  config = _CONFIG.value
  if not train.is_complete(workdir) and _TRAIN.value:
    print(f"training {workdir} ...")
    train.train(_TRAIN_CONFIG.value, workdir)
  settings = llc.SweepSettings.from_config(config.sgld)
  steps = None if _STEPS.value is None else [int(s) for s in _STEPS.value]
  result = llc.sweep(workdir, settings, steps=steps, name=config.sweep.name,
                     checkpoints_per_batch=config.sweep.checkpoints_per_batch)
  if not distributed.is_main_process():
    return 0
  print(f"LLC sweep {config.sweep.name!r}: {len(result.steps_done)} checkpoints estimated, "
        f"{len(result.steps_skipped)} already done ({result.chain_steps_per_second:.0f} chain-steps/s)")
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
