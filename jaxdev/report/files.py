"""A run's published files: their names, and the CSV and JSON readers and writers they share.

Floats are written with ``repr`` (shortest round trip), so a CSV holds float64 values exactly.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from jaxdev import errors
from jaxdev import rundir

LLC_CSV = "llc.csv"
METRICS_CSV = "metrics.csv"
INDICATORS_CSV = "indicators.csv"
ED_SCORES_CSV = "ed_scores.csv"
STAGES_JSON = rundir.STAGES  # the same records as a run's, under the same names
FORMS_JSON = rundir.FORMS
RUN_JSON = "run.json"
FIGURES = rundir.FIGURES
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "llc_vs_reference.png"


def check_csv(name: str) -> str:
  """The file name of check sweep ``name``'s LLC table."""
  return f"llc_{name}.csv"


def _cell(value) -> str:
  if isinstance(value, (float, np.floating)):
    return repr(float(value))
  if isinstance(value, (np.integer,)):
    return str(int(value))
  return str(value)


def write_csv(path: str, columns: dict) -> None:
  """Writes {name: [N] values} as a CSV with a header row (atomically)."""
  names = list(columns)
  length = len(columns[names[0]]) if names else 0
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(names)
  for i in range(length):
    writer.writerow([_cell(columns[n][i]) for n in names])
  rundir.atomic_write_text(path, text.getvalue())


def read_csv(path: str) -> dict:
  """{name: [N] array} of a CSV written by :func:`write_csv`: numeric columns as float64 (int64
  where every value is an integer literal; empty cells NaN), others as str."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.reader(f))
  except OSError as e:
    raise errors.UserError(f"cannot read {path}: {e.strerror or e}") from None
  if not rows:
    raise errors.UserError(f"{path} is empty")
  header, body = rows[0], rows[1:]
  if any(len(r) != len(header) for r in body):
    raise errors.UserError(f"{path}: rows of unequal length (damaged file?)")
  out = {}
  for j, name in enumerate(header):
    values = [r[j] for r in body]
    try:
      out[name] = np.array([int(v) for v in values], np.int64)
    except ValueError:
      try:  # an empty cell (a record without this field) reads as NaN
        out[name] = np.array([float(v) if v else np.nan for v in values], np.float64)
      except ValueError:
        out[name] = np.array(values, dtype=np.str_)
  return out


def read_csv_if_present(directory: str, name: str) -> dict | None:
  """:func:`read_csv` of ``directory/name``, or None where there is no such file."""
  path = os.path.join(directory, name)
  return read_csv(path) if os.path.isfile(path) else None


def load_json(out_dir: str, name: str):
  """A published JSON record (``STAGES_JSON`` or ``FORMS_JSON``), or None if absent."""
  path = os.path.join(out_dir, name)
  return rundir.read_json(path, name) if os.path.isfile(path) else None
