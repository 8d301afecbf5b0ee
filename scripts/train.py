"""Train a model into a run directory (resumes a partial run; a finished run is left as is).

  python scripts/train.py --config configs/regression.py:quick --workdir runs/quick
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_path(__file__, "configs", "regression.py:quick"),
    "Training config file (file.py:variant); override fields with --config.FIELD=VALUE.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to write (created if missing).")
_ESTIMATE = flags.DEFINE_bool("estimate", True, "Print estimated device-hours before starting.")
_ESTIMATE_ONLY = flags.DEFINE_bool("estimate_only", False, "Print the estimate and stop.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # pylint: disable=import-outside-toplevel
  from jaxdev import distributed
  distributed.maybe_initialize()
  from jaxdev import costs
  from jaxdev import train
  if _ESTIMATE_ONLY.value or (_ESTIMATE.value and not train.is_complete(_WORKDIR.value)):
    record = costs.training_estimate(_CONFIG.value)
    if distributed.is_main_process():
      print(costs.format_estimate(record), flush=True)
    if _ESTIMATE_ONLY.value:
      return 0
  result = train.train(_CONFIG.value, _WORKDIR.value)
  if not distributed.is_main_process():
    return 0
  if result.status == "already finished":
    print(f"{_WORKDIR.value} already holds the finished run ({result.final_step} steps); "
          "nothing to do.")
  else:
    print(f"finished {result.final_step} steps in {_WORKDIR.value}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
