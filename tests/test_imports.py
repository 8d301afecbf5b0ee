"""The package's import structure: no import cycles, and no global matplotlib choices.

The import graph is read from the source (every ``import`` statement of every module, those
inside functions included), so an import hidden in a function to break a cycle at run time is
still an edge here.
"""

import ast
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "jaxdev")


def _modules() -> dict:
  """{dotted module name: source path} of every module of the package."""
  out = {}
  for directory, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


MODULES = _modules()


def _owner(name: str):
  """The package module that ``import name`` loads last: ``name`` or its nearest parent."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(module: str) -> set:
  """The package modules that ``module`` imports anywhere in its source."""
  path = MODULES[module]
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(_owner(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the package, up level - 1
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      for alias in node.names:  # "from a import b" imports module a.b where there is one
        full = f"{base}.{alias.name}"
        found.add(full if full in MODULES else _owner(base))
  found.discard(None)
  found.discard(module)
  return found


def _cycles(graph: dict) -> list:
  """The strongly connected components of more than one node (Tarjan), each sorted."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return out


def _unit(module: str) -> str:
  """A module's unit: its subpackage of jaxdev (jaxdev.analysis), or the top-level module."""
  return ".".join(module.split(".")[:2])


def _unit_graph(graph: dict) -> dict:
  units = {}
  for module, imported in graph.items():
    units.setdefault(_unit(module), set()).update(
        _unit(m) for m in imported if _unit(m) != _unit(module))
  return units


def test_the_graph_reader_sees_imports_inside_functions_and_finds_cycles():
  assert "jaxdev.report.artifacts" in MODULES and "jaxdev" in MODULES
  # plot_run imports the indicator panels inside the function; the edge is there.
  assert "jaxdev.analysis.indicator_plots" in _imports("jaxdev.indicators.run")
  assert {"jaxdev.analysis.stages", "jaxdev.report.files",
          "jaxdev.report.reference"} <= _imports("jaxdev.report.compare")
  # Two modules importing each other (one of them inside a function) make one cycle.
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_is_part_of_an_import_cycle():
  graph = {m: _imports(m) for m in MODULES}
  assert _cycles(graph) == []


def test_subpackages_depend_on_each_other_one_way():
  """Between subpackages (and top-level modules) too there is no cycle: in particular the report
  tooling builds on the analysis core, which never imports it."""
  graph = _unit_graph({m: _imports(m) for m in MODULES})
  assert _cycles(graph) == []
  assert "jaxdev.analysis" in graph["jaxdev.report"]
  assert "jaxdev.report" not in graph["jaxdev.analysis"]


def _global_matplotlib_lines(path: str) -> list:
  """Lines of ``path`` that set matplotlib's backend or import pyplot (its global figure state)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  aliases, lines = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name == "matplotlib":
          aliases.add(alias.asname or "matplotlib")
        if alias.name.startswith("matplotlib.pyplot"):
          lines.append(node.lineno)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matplotlib"):
      if any(a.name in ("use", "pyplot") for a in node.names) or node.module.startswith(
          "matplotlib.pyplot"):
        lines.append(node.lineno)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "use" and isinstance(node.func.value, ast.Name)
        and node.func.value.id in aliases):
      lines.append(node.lineno)
  return sorted(lines)


def test_the_backend_check_finds_every_spelling(tmp_path):
  path = tmp_path / "m.py"
  path.write_text(textwrap.dedent("""\
      import matplotlib as mpl
      import matplotlib.pyplot as plt
      from matplotlib import use
      def f():
        mpl.use("Agg")
      from matplotlib.figure import Figure
      """))
  assert _global_matplotlib_lines(str(path)) == [2, 3, 5]


def test_no_module_chooses_a_matplotlib_backend_or_uses_pyplot():
  """Library figures are ``matplotlib.figure.Figure`` objects: the backend stays the user's."""
  found = {m: _global_matplotlib_lines(p) for m, p in MODULES.items()}
  assert {m: lines for m, lines in found.items() if lines} == {}


def test_importing_every_module_keeps_the_users_backend():
  """In a fresh interpreter with a backend chosen first (svg, which nothing would choose by
  itself), importing every module of the package leaves it chosen, and pyplot unloaded."""
  sentinel = "svg"
  code = textwrap.dedent(f"""\
      import importlib, sys
      import matplotlib
      matplotlib.use({sentinel!r})
      for name in {sorted(MODULES)!r}:
        importlib.import_module(name)
      print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == [sentinel, "False"]
