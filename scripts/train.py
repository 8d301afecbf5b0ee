"""Train a model into a run directory (resumes a partial run; a finished run is left as is).

  python scripts/train.py --config configs/regression.py:quick --workdir runs/quick
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

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


def main(_):
  from jaxdev import job  # pylint: disable=import-outside-toplevel
  job.train_job(_CONFIG.value, _WORKDIR.value, estimate=_ESTIMATE.value,
                estimate_only=_ESTIMATE_ONLY.value)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main, distributed=True))
