"""Publishes a run's small artifacts (LLC, metrics, indicators, ED scores, stages, forms, figures).

  python scripts/export_run.py --workdir runs/lr-seed0 --out docs/reproduction/lr-seed0 \
      --sweep paper_cpu --check_sweeps paper_check --reference tests/data/authors-lr-seed0

Stages and forms are recomputed from the written files (jaxdev.analysis.artifacts), so the
published directory can be re-analysed on its own.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to publish.", required=True)
_OUT = flags.DEFINE_string("out", None, "Directory to write the artifacts into.", required=True)
_REFERENCE = flags.DEFINE_string("reference", None, "A reference run's published files (e.g. "
                                 "the authors' seed-0 CSVs): also write comparison.md.")
_SWEEP = flags.DEFINE_string("sweep", "default", "LLC sweep name (the run's llc/SWEEP).")
_CHECKS = flags.DEFINE_list("check_sweeps", [], "Other sweeps to publish beside it (e.g. "
                            "paper_check), with their LLC after their first draws.")


def main(_):
  from jaxdev.analysis import artifacts  # pylint: disable=import-outside-toplevel
  result = artifacts.export_run(_WORKDIR.value, _OUT.value, sweep=_SWEEP.value,
                                reference_dir=_REFERENCE.value, check_sweeps=_CHECKS.value)
  print(f"wrote {len(result['files'])} files to {_OUT.value}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
