"""The README and the pages under docs/ as a newcomer reads them: every script command names a
script and flags it defines, every config it names exists with its variant and fields, every
link resolves, the README's example runs, its test command is the one CI runs, and what the code
cites of docs/methods.md is there."""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
METHODS = REPO / "docs" / "methods.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
EXAMPLE_SECTION = "## The LLC of your own model"
MAX_README_LINES = 250
#: The sections of docs/methods.md that code cites by title.
METHODS_SECTIONS = ("The estimator", "Sampler options", "Stage detection", "Essential dynamics",
                    "Indicators", "The settings")
#: Flags absl defines for every script.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile"}
#: Flag kinds that take no value (``--name`` / ``--noname``).
BOOL_KINDS = {"bool", "boolean"}


def _read(path: Path) -> str:
  return path.read_text(encoding="utf-8")


def fenced_blocks(text: str, language: str) -> list:
  """The bodies of the ```language fenced blocks of a Markdown text."""
  return re.findall(rf"^```{language}[ \t]*\n(.*?)^```", text, re.M | re.S)


def shell_commands(block: str) -> list:
  """The commands of a bash block: continuation lines joined, comments dropped, split at &&."""
  text = re.sub(r"\\\n", " ", block)
  commands = []
  for line in text.splitlines():
    line = line.split(" #")[0].strip()
    if line and not line.startswith("#"):
      commands += [part.strip() for part in line.split("&&") if part.strip()]
  return commands


def script_commands(text: str) -> list:
  """Every ``python scripts/X.py ...`` of a page: in its bash blocks and in inline code."""
  candidates = [c for block in fenced_blocks(text, "bash") for c in shell_commands(block)]
  prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  candidates += re.findall(r"`(python scripts/[^`]+)`", prose)
  return [shlex.split(c) for c in candidates if c.startswith("python scripts/")]


@functools.lru_cache(maxsize=None)
def script_interface(script: str) -> tuple:
  """({flag: (kind, enum choices or None, default config "file.py:variant" or None)},
  takes_positional) of ``scripts/<script>``, from its source and that of ``jaxdev/cli.py``, which
  every script imports (absl defines flags at import)."""
  trees = [ast.parse(_read(REPO / "scripts" / script)), ast.parse(_read(REPO / "jaxdev" / "cli.py"))]
  defined, positional = {}, False
  for node in (node for tree in trees for node in ast.walk(tree)):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
      continue
    if node.func.attr == "run" and any(k.arg == "positional" and getattr(k.value, "value", False)
                                       for k in node.keywords):
      positional = True
    if not node.func.attr.startswith("DEFINE_") or not node.args:
      continue
    name = node.args[0]
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
      continue
    kind = node.func.attr[len("DEFINE_"):]
    choices = default = None
    if kind == "enum":
      choices = [e.value for e in node.args[2].elts]
    if kind == "config_file":  # default: cli.repo_path(__file__, "configs", "file.py:variant")
      parts = [a.value for a in node.args[1].args if isinstance(a, ast.Constant)]
      default = "/".join(parts)
    defined[name.value] = (kind, choices, default)
  return defined, positional


def load_config(spec: str):
  """``get_config(variant)`` of the config file ``path.py:variant`` (relative to the repository)."""
  path, _, variant = spec.partition(":")
  assert (REPO / path).is_file(), f"no config file {path}"
  module_spec = importlib.util.spec_from_file_location(f"_readme_config_{Path(path).stem}",
                                                       REPO / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


def check_command(argv: list) -> None:
  """Raises AssertionError unless ``argv`` (python scripts/X.py ...) is accepted as written."""
  command = " ".join(argv)
  script = argv[1][len("scripts/"):]
  assert (REPO / "scripts" / script).is_file(), f"{command}: no script scripts/{script}"
  defined, takes_positional = script_interface(script)
  configs, overrides, positionals = {}, [], []
  args = argv[2:]
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if not arg.startswith("--"):
      positionals.append(arg)
      continue
    name, has_value, value = arg[2:].partition("=")
    base = name.split(".")[0]
    if "." in name and defined.get(base, ("",))[0] == "config_file":
      overrides.append((base, name.split(".", 1)[1]))
      i += 0 if has_value else 1
      continue
    if name in ABSL_FLAGS:
      continue
    if name not in defined and name.startswith("no") and name[2:] in defined:
      assert defined[name[2:]][0] in BOOL_KINDS, f"{command}: --{name} negates a non-boolean flag"
      assert not has_value, f"{command}: --{name} takes no value"
      continue
    assert name in defined, f"{command}: scripts/{script} defines no flag --{name}"
    kind, choices, _ = defined[name]
    if kind in BOOL_KINDS:
      continue
    if not has_value:
      assert i < len(args), f"{command}: --{name} needs a value"
      value = args[i]
      i += 1
    if choices is not None:
      assert value in choices, f"{command}: --{name}={value} is not one of {choices}"
    if kind == "config_file":
      configs[name] = value
  if positionals:
    assert takes_positional, f"{command}: scripts/{script} takes no positional arguments"
    from jaxdev.measure import benchmarks  # pylint: disable=import-outside-toplevel
    assert len(positionals) == 1 and positionals[0] in benchmarks.COMMANDS, command
  for name, spec in configs.items():
    load_config(spec)  # a wrong variant raises here
  for base, field in overrides:
    config = load_config(configs.get(base) or defined[base][2])
    assert has_field(config, field), f"{command}: --{base}.{field}: no such config field"


def all_script_commands() -> list:
  return [(page.relative_to(REPO).as_posix(), argv) for page in PAGES
          for argv in script_commands(_read(page))]


def test_readme_is_short_and_runs_the_main_job_with_its_figure():
  text = _read(README)
  assert len(text.splitlines()) <= MAX_README_LINES
  assert ["python", "scripts/llc_sweep.py"] in script_commands(text)
  assert re.search(r"!\[[^\]]*\]\(docs/figures/[^)]+\.png\)", text)


def test_every_script_command_in_the_readme_and_docs_runs_as_written():
  commands = all_script_commands()
  scripts = {argv[1] for _, argv in commands}
  assert len(scripts) >= 6, scripts  # the parser finds the commands it is meant to check
  for page, argv in commands:
    try:
      check_command(argv)
    except AssertionError as error:
      raise AssertionError(f"{page}: {error}") from None


@pytest.mark.parametrize("argv, message", [
    ("python scripts/llc_sweep.py --workdri runs/quick", "defines no flag --workdri"),
    ("python scripts/nope.py", "no script"),
    ("python scripts/llc_sweep.py --config configs/llc.py:quik", "unknown config variant"),
    ("python scripts/llc_sweep.py --config.sgld.num_chain=4", "no such config field"),
    ("python scripts/indicators.py --which some", "is not one of"),
    ("python scripts/train.py --noworkdir", "negates a non-boolean"),
    ("python scripts/analyze.py runs/quick", "takes no positional"),
    ("python scripts/benchmark.py fast", "benchmark.py fast"),
])
def test_the_command_check_refuses_what_a_script_would(argv, message):
  with pytest.raises((AssertionError, ValueError), match=re.escape(message)):
    check_command(shlex.split(argv))


def test_the_command_check_accepts_what_a_script_would():
  for command in ("python scripts/llc_sweep.py --noindicators --config.sgld.num_chains=8",
                  "python scripts/train.py --config=configs/language.py:quick --workdir runs/x",
                  "python scripts/benchmark.py sweep --checkpoints 2 --helpfull"):
    check_command(shlex.split(command))


def test_the_readme_test_command_is_the_one_ci_runs():
  readme = {" ".join(c.split()) for block in fenced_blocks(_read(README), "bash")
            for c in shell_commands(block)}
  ci = [" ".join(c.split()) for c in shell_commands(_read(REPO / ".ci" / "run"))
        if c.startswith(("pip install", "python -m pytest"))]
  assert any("pytest" in c for c in ci) and any(c.startswith("pip install") for c in ci)
  for command in ci:
    assert command in readme, f".ci/run runs {command!r}; the README does not show it"


def _slug(heading: str) -> str:
  """The anchor GitHub gives a heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def _anchors(path: Path) -> set:
  text = re.sub(r"^```.*?^```", "", _read(path), flags=re.M | re.S)
  return {_slug(h) for h in re.findall(r"^#+\s+(.*?)\s*$", text, re.M)}


def test_every_relative_link_of_the_readme_and_docs_resolves():
  checked = 0
  for page in PAGES:
    text = re.sub(r"^```.*?^```", "", _read(page), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"[a-z]+:", target):
        continue
      path, _, anchor = target.partition("#")
      resolved = (page.parent / path).resolve() if path else page
      where = f"{page.relative_to(REPO)}: ({target})"
      assert resolved.exists(), f"{where} does not exist"
      if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{where}: no such heading"
      checked += 1
  assert checked >= 20


def test_the_readme_links_every_page_under_docs():
  text = _read(README)
  for page in PAGES[1:]:
    assert f"(docs/{page.name})" in text, f"docs/{page.name} is not in the README's table"


def test_methods_page_has_the_sections_code_cites():
  headings = re.findall(r"^## (.*?)\s*$", _read(METHODS), re.M)
  assert set(METHODS_SECTIONS) <= set(headings), headings
  cited = 0
  for folder in ("jaxdev", "tests", "scripts", "configs"):
    for path in (REPO / folder).rglob("*.py"):
      if path == Path(__file__).resolve():
        continue
      text = _read(path)
      assert "SPEC " + "§" not in text, f"{path.relative_to(REPO)} cites an internal document"
      for title in re.findall(r'docs/methods\.md,\s*"([^"]+)"', text):
        assert title in headings, f'{path.relative_to(REPO)} cites docs/methods.md, "{title}"'
        cited += 1
      for page in re.findall(r"\bdocs/[\w\-./]+\.md\b", text):
        assert (REPO / page).is_file(), f"{path.relative_to(REPO)} names {page}"
  assert cited >= 20


def _layout() -> list:
  """(directory, name, description) of each entry of the README's Layout block."""
  section = _read(README).split("## Layout", 1)[1]
  block = re.search(r"^```\n(.*?)^```", section, re.M | re.S).group(1)
  entries, top = [], None
  for line in block.splitlines():
    indent = len(line) - len(line.lstrip())
    name, _, description = line.strip().partition(" ")
    if indent == 0:
      top = name
      entries.append(("", name, description))
    else:
      entries.append((top, name, description))
  return entries


def test_the_layout_is_the_tree():
  entries = _layout()
  for parent, name, _ in entries:
    assert (REPO / parent / name.rstrip("/")).exists(), f"Layout lists {parent}{name}"
  described = {name.rstrip("/"): description for parent, name, description in entries
               if parent == "jaxdev/"}
  package = REPO / "jaxdev"
  for path in package.iterdir():
    if path.is_dir() and (path / "__init__.py").exists():
      assert path.name in described, f"Layout lacks jaxdev/{path.name}/"
      for module in path.glob("*.py"):
        if module.stem != "__init__":
          assert re.search(rf"\b{module.stem}\b", described[path.name]), \
              f"Layout's jaxdev/{path.name}/ line does not name {module.stem}"
    elif path.suffix == ".py" and path.stem != "__init__":
      assert path.stem in {n.removesuffix(".py") for n in described}, f"Layout lacks {path.name}"


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
  section = _read(README).split(EXAMPLE_SECTION, 1)[1]
  blocks = fenced_blocks(section, "python")
  assert blocks and "from jaxdev import sgld" in blocks[0]
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": "readme_example"}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  result, num_params = namespace["result"], namespace["num_params"]
  assert result.num_failed == 0 and math.isfinite(result.llc_std)
  # A network with unused hidden units is singular: its LLC is positive and below d/2.
  assert 0 < result.llc_mean < num_params / 2
  assert re.search(r"\d+\.\d+ ± \d+\.\d+ \(standard error\)", capsys.readouterr().out)
  assert (tmp_path / "llc_trace.png").stat().st_size > 10_000
