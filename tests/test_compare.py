"""Side-by-side tables of published artifacts and the authors' published files."""

import json
import os

import numpy as np
import pytest

from jaxdev.report import compare
from jaxdev.report import files
from jaxdev.report import reference

HERE = os.path.dirname(os.path.abspath(__file__))
AUTHORS = os.path.join(HERE, "data", "authors-lr-seed0")
QUICK = os.path.join(os.path.dirname(HERE), "docs", "reproduction", "quick")


def _rows(table):
  return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_nearest_is_nearest_in_log_step():
  steps = [0, 10, 100, 1000]
  assert [compare.nearest(steps, t) for t in (0, 2, 4, 40, 300, 5000)] == [0, 0, 1, 2, 2, 3]


def test_llc_table_reads_both_sides_at_the_nearest_checkpoint():
  rows = {r[0]: r for r in _rows(compare.llc_table(QUICK, AUTHORS))}
  assert len(rows) == len(reference.LLC_STEPS)
  assert rows["0"][1:] == ["0", "-24.0 ± 3.0", "0", "12.6 ± 0.9", "4"]
  assert rows["5,000"][1:3] == ["5,000", "109.5 ± 4.2"]
  assert rows["10,000"][1:] == ["–", "–", "10,101", "155.4 ± 1.0", "156"]  # past the run's end
  assert rows["40,000"][1:] == ["–", "–", "40,292", "169.6 ± 1.2", "170"]
  assert rows["500,000"][3:] == ["499,999", "124.3 ± 13.5", "128"]
  assert set(reference.PAPER_LLC) == set(reference.LLC_STEPS)


def test_match_boundaries_pairs_each_paper_boundary_with_its_nearest_detection():
  paper = (1_000, 40_000, 126_000, 320_000)
  pairs, unpaired = compare.match_boundaries([1_311, 25_610, 337_022], paper)
  assert pairs == [1_311, 25_610, None, 337_022] and unpaired == []  # not paired by order
  pairs, unpaired = compare.match_boundaries([133, 1_539, 3_554], paper)
  assert pairs == [1_539, None, None, None] and unpaired == [133, 3_554]
  pairs, unpaired = compare.match_boundaries([], paper)
  assert pairs == [None] * 4 and unpaired == []


def test_stage_table_puts_the_reference_curve_through_the_same_detector():
  rows = _rows(compare.stages_table(QUICK, AUTHORS))
  paper_rows = [r for r in rows if r[1] != "–"]
  assert [r[:2] for r in paper_rows] == [["LR1/LR2", "1,000"], ["LR2/LR3", "40,000"],
                                         ["LR3/LR4", "126,000"], ["LR4/LR5", "320,000"]]
  on_reference = [int(r[2].replace(",", "")) for r in paper_rows]
  for found, paper in zip(on_reference, reference.PAPER_BOUNDARIES):
    assert paper / 1.5 <= found <= paper * 1.5
  # The 5,000-step run's boundaries all lie nearest the paper's first; the nearest is paired.
  assert [r[3] for r in rows] == ["133 (plateau)", "1,539 (sign change)", "3,554 (sign change)",
                                  "–", "–", "–"]
  assert [r[0] for r in rows] == ["–", "LR1/LR2", "–", "LR2/LR3", "LR3/LR4", "LR4/LR5"]


def _check_sweep_dir(root, steps, llc, std, chains, name="late"):
  run = root / "published"
  run.mkdir(parents=True)
  files.write_csv(str(run / f"llc_{name}.csv"),
                      {"step": list(steps), "num_draws": [5000] * len(steps), "llc_mean": list(llc),
                       "llc_std": list(std), "num_chains": [chains] * len(steps)})
  return str(run)


# The log-spaced checkpoints of the paper run past 40k, and some linear ones (27 in all).
LATE_STEPS = (46004, 52524, 59969, 68468, 78173, 80808, 89253, 101010, 101903, 116346, 126263,
              132836, 151664, 166667, 173160, 197703, 212121, 225724, 242424, 257717, 294245,
              318182, 335949, 383565, 404040, 437930, 500000)


def test_check_sweep_stages_beside_the_reference_at_the_same_checkpoints(tmp_path):
  """The authors' own curve at 27 late checkpoints, published as a check sweep: both columns are
  the same detector on the same numbers, and they hold the paper's two late boundaries."""
  ref = files.read_csv(os.path.join(AUTHORS, "llc.csv"))
  picks = [compare.nearest(ref["step"], s) for s in LATE_STEPS]
  run = _check_sweep_dir(tmp_path, ref["step"][picks], ref["llc_mean"][picks],
                         ref["llc_chain_std"][picks], reference.REFERENCE_CHAINS)
  rows = _rows(compare.check_stages_table(run, AUTHORS, "late"))
  # Only the boundaries past the sweep's first checkpoint (46k) have rows.
  assert [r[:2] for r in rows if r[1] != "–"] == [["LR3/LR4", "126,000"], ["LR4/LR5", "320,000"]]
  for r in rows:
    assert r[3].split(" (")[0] == r[2]  # same curve, same boundaries
  found = [int(r[2].replace(",", "")) for r in rows if r[1] != "–"]
  for step, paper in zip(found, (126_000, 320_000)):
    assert paper / 1.5 <= step <= paper * 1.5
  # Too few checkpoints for a stage table: none.
  few = _check_sweep_dir(tmp_path / "few", ref["step"][picks[:11]], ref["llc_mean"][picks[:11]],
                         ref["llc_chain_std"][picks[:11]], 10)
  assert compare.check_stages_table(few, AUTHORS, "late") is None


def test_end_of_run_tables_hold_the_reference_values():
  table = compare.position_loss_table(QUICK, AUTHORS)
  header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
  assert header == ["position", "jaxdev test loss (metrics.csv, step 5,000)",
                    "reference test_loss_position_k (evals.csv, step 499,999)"]
  rows = _rows(table)
  assert [r[0] for r in rows] == [str(k) for k in range(1, 9)] + ["mean"]
  # The authors' training-loop evaluation (noise variance 0.125), not their figure notebook's
  # loss_position_k (noise std 0.125: 3.966 and 0.251 at positions 1 and 8).
  assert rows[0][2] == "4.117" and rows[7][2] == "0.471" and rows[8][2] == "1.740"
  # The run's side is its last training-loop evaluation, as metrics.csv holds it.
  metrics = files.read_csv(os.path.join(QUICK, files.METRICS_CSV))
  last = [i for i, split in enumerate(metrics["split"]) if split == "eval"][-1]
  assert metrics["step"][last] == 5_000
  expected = json.loads(metrics["loss_per_position"][last]) + [metrics["loss"][last]]
  assert [r[1] for r in rows] == [f"{v:.3f}" for v in expected]
  ours = np.array([float(r[1]) for r in rows[:8]])
  assert np.all(np.diff(ours) < 0)  # the quick run learns in context: loss falls with position
  assert abs(float(rows[8][1]) - ours.mean()) < 1e-3  # the mean row is the mean over positions
  ln = {r[0]: r for r in _rows(compare.layernorm_table(QUICK, AUTHORS))}
  assert ln["0"][1:] == ["1.000 (step 0)", "1.000 (step 0)"]
  assert ln["500,000"][2] == "0.083 (step 499,999)"
  hessian = {r[0]: r for r in _rows(compare.hessian_table(QUICK, AUTHORS))}
  assert hessian["40,000"] == ["40,000", "–", "1,713.8 / 214.1 (step 40,292)"]


def test_position_table_never_sets_the_figure_notebook_losses_beside_the_test_loss(tmp_path):
  """A reference with only the figure notebook's evaluation (loss_position_k, less noise) gets no
  column; a run without training-loop evaluations gets none either."""
  evals = files.read_csv(os.path.join(AUTHORS, "evals.csv"))
  notebook = tmp_path / "notebook"
  notebook.mkdir()
  files.write_csv(str(notebook / "evals.csv"),
                  {n: v for n, v in evals.items() if not n.startswith("test_loss")})
  header = compare.position_loss_table(QUICK, str(notebook)).splitlines()[0]
  assert "jaxdev test loss" in header and "reference" not in header
  header = compare.position_loss_table(str(tmp_path), AUTHORS).splitlines()[0]
  assert "jaxdev" not in header and "test_loss_position_k" in header


def test_forms_table_and_the_whole_report():
  assert [r[1] for r in _rows(compare.forms_table(QUICK).split("\n\n")[0])] == ["–"] * 4
  text = compare.comparison_markdown(QUICK, AUTHORS)
  assert text.count("### ") == 7 and "All forms of this run: none." in text


def test_difference_table_pairs_matching_checkpoints_by_range(tmp_path):
  ref = files.read_csv(os.path.join(AUTHORS, "llc.csv"))
  keep = ref["step"] < 100_000
  steps = ref["step"][keep]
  steps = np.where(steps < 40, steps, steps + 1)  # as this project's against the authors'
  lone = int(np.argmax(steps > 20_000))
  steps[lone] += 1_000  # 5 % from the nearest: left out
  shift = np.where(steps < 1_000, -30.0, 5.0)
  files.write_csv(str(tmp_path / files.LLC_CSV), {
      "step": steps, "llc_mean": ref["llc_mean"][keep] + shift,
      "llc_std": np.ones(keep.sum())})
  rows = {r[0]: r[1:] for r in _rows(compare.difference_table(str(tmp_path), AUTHORS))}
  early = int(np.sum(steps < 1_000))
  assert rows["0–999"][:4] == [str(early), "30.0", "30.0", "-30.0"]
  middle = rows["10,000–99,999"]
  assert int(middle[0]) == int(np.sum((steps >= 10_000) & (steps < 100_000))) - 1
  assert middle[2:4] == ["5.0", "5.0"] and middle[4].startswith("+")
  assert rows["100,000–500,000"][:2] == ["0", "–"]  # nothing past the run's end
  main = compare.difference_table(str(tmp_path), AUTHORS)
  os.rename(tmp_path / files.LLC_CSV, tmp_path / files.check_csv("check"))
  assert compare.difference_table(str(tmp_path), AUTHORS, check="check") == main


def test_reduction_summary_pairs_the_main_sweep_with_the_check_at_equal_steps(tmp_path):
  steps = np.array([0, 500, 2_000, 5_000, 20_000, 50_000, 200_000])
  check = 100.0 + np.arange(steps.size)
  files.write_csv(str(tmp_path / files.check_csv("check")), {
      "step": steps, "num_draws": [5000] * steps.size, "llc_mean": check,
      "llc_std": np.ones(steps.size), "num_chains": [4] * steps.size})
  main = check + np.where(steps < 10_000, 2.0, -20.0)
  main[4] = np.nan  # a failed checkpoint of the main sweep: not paired
  files.write_csv(str(tmp_path / files.LLC_CSV), {
      "step": np.append(steps[:-1], 300_000),  # the main sweep lacks 200,000 (has 300,000)
      "llc_mean": np.append(main[:-1], 1.0), "llc_std": np.ones(steps.size)})
  rows = {r[0]: r[1:] for r in _rows(compare.reduction_summary_table(str(tmp_path), "check"))}
  assert rows["0–999"][:4] == ["2", "2.0", "2.0", "2.0"]
  assert rows["1,000–9,999"] == ["2", "2.0", "2.0", "2.0", "+2.0 %"]  # 2 / 102, 2 / 103
  assert rows["10,000–99,999"][:4] == ["1", "20.0", "20.0", "-20.0"]
  assert rows["100,000–500,000"][:2] == ["0", "–"]


def test_forms_table_lists_every_form_only_when_some_match_no_paper_form(tmp_path):
  def table(steps):
    (tmp_path / "forms.json").write_text(json.dumps({"forms": [{"step": s} for s in steps]}))
    return compare.forms_table(str(tmp_path))
  four = table([2400, 36000, 110000, 170000])
  assert [r[1] for r in _rows(four)] == ["2,400", "36,000", "110,000", "170,000"]
  assert "All forms" not in four
  five = table([2400, 36000, 110000, 170000, 300000])
  assert five.endswith("All forms of this run: 2,400, 36,000, 110,000, 170,000, 300,000.")


PUBLISHED = os.path.dirname(QUICK)


def _published_comparisons():
  return sorted(d for d in os.listdir(PUBLISHED)
                if os.path.isfile(os.path.join(PUBLISHED, d, "comparison.md")))


def test_some_comparisons_are_published():
  assert "quick" in _published_comparisons()


@pytest.mark.parametrize("name", _published_comparisons())
def test_committed_comparison_is_made_from_the_committed_files(name):
  with open(os.path.join(PUBLISHED, name, "comparison.md"), encoding="utf-8") as f:
    committed = f.read()
  assert committed == compare.comparison_markdown(os.path.join(PUBLISHED, name), AUTHORS)
