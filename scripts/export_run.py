"""Publishes a run's small artifacts (LLC, metrics, indicators, ED scores, stages, forms, figures).

  python scripts/export_run.py --workdir runs/lr-seed0 --out docs/reproduction/lr-seed0 \
      --sweep paper_cpu --check_sweeps paper_check --reference tests/data/authors-lr-seed0 \
      --page docs/reproduction.md

  python scripts/export_run.py --out docs/reproduction/lr-seed0 --form_detector turns \
      --form_nulls 100 --reference tests/data/authors-lr-seed0 --page docs/reproduction.md
  python scripts/export_run.py --workdir runs/lr-seed0 --add_checks paper_positions \
      --out docs/reproduction/lr-seed0 --reference tests/data/authors-lr-seed0
  python scripts/export_run.py --workdir runs/lr-seed0 --merge_checks paper_cpu_5k \
      --out docs/reproduction/lr-seed0 --reference tests/data/authors-lr-seed0

Stages and forms are recomputed from the written files (jaxdev.report.artifacts), so the
published directory can be re-analysed on its own. Without --workdir, --out is a directory
published before: with --form_detector its forms are found again from its files (and null
paths), and its comparison with --reference is rewritten from its files alone. With
--add_checks, only those sweeps of --workdir are added to --out (llc_NAME.csv); with
--merge_checks, they are added to what --out has of them (a sweep run in parts on machines that
did not keep each other's records), printing how many checkpoints both hold and each of those
whose LLC differs. With --page, the page's quoted tables (``<!-- quoted from PATH, section
"TITLE" -->`` … ``<!-- end of quote -->``) are then refilled from the comparison files they
name; the rest of the page is left to its author.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from jaxdev import cli  # noqa: E402
from jaxdev import errors  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to publish (omitted: only "
                               "rewrite --out's comparison with --reference).")
_OUT = flags.DEFINE_string("out", None, "Directory to write the artifacts into.", required=True)
_REFERENCE = flags.DEFINE_string("reference", None, "A reference run's published files (e.g. "
                                 "the authors' seed-0 CSVs): also write comparison.md.")
_SWEEP = flags.DEFINE_string("sweep", "default", "LLC sweep name (the run's llc/SWEEP).")
_CHECKS = flags.DEFINE_list("check_sweeps", [], "Other sweeps to publish beside it (e.g. "
                            "paper_check), with their LLC after their first draws.")
_ADD = flags.DEFINE_list("add_checks", [], "With --workdir: only add these sweeps of the run "
                         "to --out (llc_NAME.csv), keeping the rest of --out.")
_MERGE = flags.DEFINE_list("merge_checks", [], "With --workdir: add these sweeps' records to "
                           "--out's llc_NAME.csv, keeping its rows at the checkpoints the run "
                           "has no record of (one sweep run in parts on several machines).")
_DETECTOR = flags.DEFINE_enum("form_detector", None, ["vertices", "turns"], "Without --workdir: "
                              "find --out's forms again with this detector.")
_NULLS = flags.DEFINE_integer("form_nulls", 0, "With --form_detector turns: null paths per null "
                              "model for the p-values (about 3 s each at 5,001 probe rows).")
_ALLOW_INCOMPLETE = flags.DEFINE_bool(
    "allow_incomplete", False, "Publish a run whose training, checkpoints or sweep are not whole "
    "(run.json says why); refused otherwise.")
_PAGE = flags.DEFINE_string("page", None, "A Markdown page quoting comparison.md (e.g. "
                            "docs/reproduction.md): refill its quoted tables afterwards.")


def main(_):
  # pylint: disable=import-outside-toplevel
  from jaxdev.report import artifacts, compare, page
  if _PAGE.value and not os.path.isfile(_PAGE.value):
    raise errors.UserError(f"--page {_PAGE.value} is not a file")
  if (_ADD.value or _MERGE.value) and not _WORKDIR.value:
    raise errors.UserError("--add_checks and --merge_checks need --workdir")
  if _WORKDIR.value and _DETECTOR.value:
    raise errors.UserError("--form_detector re-analyses a published --out: omit --workdir")
  if _WORKDIR.value and (_ADD.value or _MERGE.value):
    written = [artifacts.export_check(_WORKDIR.value, _OUT.value, name) for name in _ADD.value]
    for name in _MERGE.value:
      path, overlap = artifacts.merge_check(_WORKDIR.value, _OUT.value, name)
      written.append(path)
      same = sum(before == now for _, before, now in overlap)
      print(f"{name}: checkpoints both published and in the run: {len(overlap)}, with the same "
            f"LLC: {same}")
      for step, before, now in overlap:
        if before != now:
          print(f"{name} at step {step:,}: published {before:.4f}, the run's record {now:.4f}")
    if _REFERENCE.value:
      written += compare.write_comparison(_OUT.value, _REFERENCE.value)
  elif _WORKDIR.value:
    written = artifacts.export_run(_WORKDIR.value, _OUT.value, sweep=_SWEEP.value,
                                   reference_dir=_REFERENCE.value,
                                   check_sweeps=_CHECKS.value,
                                   allow_incomplete=_ALLOW_INCOMPLETE.value)["files"]
  elif cli.given(_SWEEP) or _CHECKS.value or not (_REFERENCE.value or _DETECTOR.value):
    raise errors.UserError("without --workdir, give --reference or --form_detector (and no "
                           "--sweep, --check_sweeps)")
  else:
    written = []
    if _DETECTOR.value:
      artifacts.reanalyze_forms(_OUT.value, detector=_DETECTOR.value, num_nulls=_NULLS.value)
      written += [os.path.join(_OUT.value, "run.json"), os.path.join(_OUT.value, "forms.json")]
    if _REFERENCE.value:
      written += compare.write_comparison(_OUT.value, _REFERENCE.value)
  print(f"wrote {len(written)} files to {_OUT.value}")
  if _PAGE.value:
    changed = page.requote_page(_PAGE.value)
    print(f"{_PAGE.value}: quoted tables {'refilled' if changed else 'already current'}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
