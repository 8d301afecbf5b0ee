"""The quickstart notebook and the README's notebook example run, from outside the checkout,
against the installed package."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "docs", "notebooks", "quickstart.ipynb")
README_SECTION = "## The LLC of your own model"


def _clean_env():
  """The environment of a user's process: no repository root on the path, no forced devices."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env.pop("MPLBACKEND", None)  # a notebook kernel shows figures inline, as in Colab
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def test_notebook_is_stored_without_outputs():
  nbformat = pytest.importorskip("nbformat")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  # The first code cell installs jaxdev only where it is not importable.
  assert "find_spec(\"jaxdev\") is None" in code[0].source and "pip" in code[0].source


def test_quickstart_notebook_runs_top_to_bottom(tmp_path):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  saved = dict(os.environ)
  os.environ.clear()
  os.environ.update(_clean_env())  # the kernel inherits this process's environment
  try:
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
  finally:
    os.environ.clear()
    os.environ.update(saved)
  outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                    for o in c.outputs)
  assert "finished at step 400" in outputs
  # The trained regression model is near a minimum: a positive LLC, far below d/2 = 25,858.
  paper_llc = float(re.search(r"^LLC (-?\d+\.\d+) ± \d+\.\d+ \(standard error", outputs, re.M).group(1))
  assert 0 < paper_llc < 51_717 / 2
  # The user's network is singular: its LLC is positive and below half its parameter count.
  mine = re.search(r"^LLC (-?\d+\.\d+) with (\d+) parameters", outputs, re.M)
  assert 0 < float(mine.group(1)) < int(mine.group(2)) / 2
  images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the two trace plots and the LLC figure


def readme_notebook_example(readme_text: str) -> str:
  """The python code block of the README's notebook section."""
  section = readme_text.split(README_SECTION, 1)[1]
  match = re.search(r"```python\n(.*?)```", section, re.S)
  assert match, "no python block in the README's notebook section"
  return match.group(1)


def test_readme_notebook_example_runs_outside_the_checkout(tmp_path):
  with open(os.path.join(REPO, "README.md")) as f:
    code = readme_notebook_example(f.read())
  script = tmp_path / "example.py"
  script.write_text(code)
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_clean_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r"-?\d+\.\d+ ± \d+\.\d+ \(standard error\)", proc.stdout), proc.stdout
  assert (tmp_path / "llc_trace.png").stat().st_size > 0
