"""The package's layers (README "Layout"), checked on the source with `ast`, lazy imports included.

Entry points import the rest and nothing imports them; models/ and data/ know nothing of training,
evaluation or inference; evaluation/ and inference/ read checkpoints and never import training/; no
import cycle anywhere. And the size rules of DEVELOPERS.md: modules and functions that fit a reader.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "colorgan")
ENTRY_POINTS = {
  "colorgan.main",
  "colorgan.fid",
  "colorgan.serve",
  "colorgan.convert_weights",
  "colorgan.video_metrics",
}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
  return rel.removesuffix(".__init__")


def _modules() -> dict[str, str]:
  found = {}
  for dirpath, _, filenames in os.walk(PACKAGE):
    for filename in filenames:
      if filename.endswith(".py"):
        path = os.path.join(dirpath, filename)
        found[_module_name(path)] = path
  return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
  """The colorgan module a dotted import name refers to (a module, or the package holding it)."""
  while name:
    if name in MODULES:
      return name
    name = name.rpartition(".")[0]
  return None


def imports_of(module: str) -> set[str]:
  """Every colorgan module `module` imports, at the top or inside a function."""
  path = MODULES[module]
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    for name in names:
      if name.startswith("colorgan"):
        target = _resolve(name)
        if target and target != module:
          found.add(target)
  return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _layer(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 2 else "top"


def test_the_walk_sees_the_layers():
  for layer in ("models", "data", "training", "evaluation", "inference"):
    assert any(_layer(m) == layer for m in MODULES), layer
  assert "colorgan.configuration" in GRAPH["colorgan.main"]  # an import the walk must find


def test_no_import_cycle():
  state, stack, cycles = {}, [], []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for target in sorted(GRAPH[module]):
      # A package's __init__ importing its own submodules is how a package is built, not a cycle.
      if target.startswith(module + "."):
        continue
      if state.get(target) == "open":
        cycles.append(stack[stack.index(target) :] + [target])
      elif target not in state:
        visit(target)
    stack.pop()
    state[module] = "done"

  for module in sorted(GRAPH):
    if module not in state:
      visit(module)
  assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_an_entry_point():
  offenders = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if t in ENTRY_POINTS]
  assert not offenders, offenders


@pytest.mark.parametrize(
  "layer,forbidden",
  [
    ("models", ("training", "evaluation", "inference", "data")),
    ("data", ("training", "evaluation", "inference", "models")),
    ("evaluation", ("training",)),
    ("inference", ("training",)),
  ],
)
def test_one_import_direction(layer, forbidden):
  offenders = [
    f"{m} -> {t}"
    for m, targets in GRAPH.items()
    if _layer(m) == layer
    for t in targets
    if _layer(t) in forbidden
  ]
  assert not offenders, offenders


def test_only_entry_points_import_cli():
  offenders = [
    m for m, targets in GRAPH.items() if "colorgan.cli" in targets and m not in ENTRY_POINTS
  ]
  assert not offenders, offenders


def test_parallel_and_data_import_no_models_clu_or_dm_pix():
  program = "\n".join(
    [
      "import sys",
      "import colorgan.parallel, colorgan.data",
      "import colorgan.data.decode, colorgan.data.sources, colorgan.data.pipeline",
      "heavy = [m for m in sys.modules if m.split('.')[0] in ('clu', 'dm_pix')",
      "         or m.startswith('colorgan.models') or m.startswith('flax.linen')]",
      "sys.exit(f'imported {heavy}' if heavy else 0)",
    ]
  )
  result = subprocess.run(
    [sys.executable, "-c", program],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]


def test_modules_and_functions_fit_a_reader():
  long_modules, long_functions = [], []
  for module, path in MODULES.items():
    with open(path, encoding="utf-8") as f:
      source = f.read()
    if source.count("\n") > MAX_MODULE_LINES:
      long_modules.append(f"{module} ({source.count(chr(10))} lines)")
    for node in ast.walk(ast.parse(source, path)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long_functions.append(f"{module}.{node.name} ({length} lines)")
  assert not long_modules, f"over {MAX_MODULE_LINES} lines: {long_modules}"
  assert not long_functions, f"over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_page_server_imports_no_tensorflow():
  """colorgan.serve starts in about a second: nothing it imports loads TensorFlow (the hint
  response is only read there; measuring it is training's)."""
  program = "import sys, colorgan.serve; sys.exit('tensorflow' in sys.modules)"
  result = subprocess.run(
    [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-2000:] or "colorgan.serve imported tensorflow"
