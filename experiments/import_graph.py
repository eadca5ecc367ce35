"""The import graph of mia_jax/: cycles, imports hidden inside functions, module and function sizes.

  python -m experiments.import_graph            # the graph, then the checks; exit 1 if one fails
  python -m experiments.import_graph --graph=0  # the checks only

Reads the sources with `ast` (nothing is imported). An edge A -> B is an `import mia_jax.B` or
`from mia_jax.B import ...` (or a relative import) anywhere in module A; `from mia_jax.pkg import
mod` counts as an edge to `mia_jax.pkg.mod` when that is a module, else to the package. Checks, the
house rules of issue 16:
  - no cycle among the modules (strongly connected components of more than one module);
  - no import of mia_jax inside a function (it would hide a cycle from the first check's reader);
  - no module over MAX_LINES lines, no function over MAX_FUNCTION_LINES lines.
"""

import argparse
import ast
import dataclasses
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "mia_jax"
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclasses.dataclass
class Module:
  name: str                     # dotted, e.g. mia_jax.attacks.lira
  path: pathlib.Path
  lines: int
  imports: set[str]             # dotted names of mia_jax modules it imports
  inner_imports: list[tuple[int, str]]   # (line, module) of imports inside functions
  long_functions: list[tuple[str, int, int]]   # (name, first line, length)


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
  if not node.level:
    return node.module or ""
  base = current.split(".") if is_package else current.split(".")[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _targets(node, current: str, is_package: bool, known: set[str]) -> list[str]:
  """The mia_jax modules an import statement names."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = _resolve(node, current, is_package)
    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
  out = []
  for name in names:
    if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
      continue
    while name not in known and "." in name:      # `import mia_jax.a.b.func` style
      name = name.rsplit(".", 1)[0]
    out.append(name)
  return out


def _function_imports(tree: ast.AST):
  """Import nodes inside function bodies (nested ones included)."""
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          yield node


def scan(root: pathlib.Path = ROOT) -> dict[str, Module]:
  paths = sorted((root / PACKAGE).rglob("*.py"))
  known = {module_name(p, root) for p in paths}
  modules = {}
  for path in paths:
    name = module_name(path, root)
    source = path.read_text()
    tree = ast.parse(source)
    is_package = path.name == "__init__.py"
    imports = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        imports.update(_targets(node, name, is_package, known))
    inner = sorted({(n.lineno, t) for n in _function_imports(tree)
                    for t in _targets(n, name, is_package, known)})
    long_fns = [(fn.name, fn.lineno, fn.end_lineno - fn.lineno + 1) for fn in ast.walk(tree)
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    imports.discard(name)
    modules[name] = Module(name, path, len(source.splitlines()), imports, inner, long_fns)
  return modules


def _edges(modules: dict[str, Module]) -> dict[str, set[str]]:
  """Import edges, without a package's edge to its own submodules (an __init__ that re-exports
  its modules) and without a module's edge to the packages above it (importing mia_jax.x.y runs
  mia_jax/x/__init__.py first, but that is Python's order, not a dependency of the module)."""
  edges = {}
  for name, mod in modules.items():
    edges[name] = {t for t in mod.imports
                   if not t.startswith(name + ".") and not name.startswith(t + ".")}
  return edges


def cycles(modules: dict[str, Module]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan), each sorted."""
  edges = _edges(modules)
  index, low, stack, on_stack, out = {}, {}, [], set(), []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  sys.setrecursionlimit(max(1000, 10 * len(modules)))
  for v in sorted(modules):
    if v not in index:
      visit(v)
  return out


def problems(modules: dict[str, Module]) -> list[str]:
  """Every violation of the house rules, one line each (empty: all pass)."""
  out = [f"import cycle: {' -> '.join(c)}" for c in cycles(modules)]
  for mod in modules.values():
    rel = mod.path.relative_to(ROOT)
    out += [f"{rel}:{line}: imports {target} inside a function"
            for line, target in mod.inner_imports]
    if mod.lines > MAX_LINES:
      out.append(f"{rel}: {mod.lines} lines (over {MAX_LINES})")
    out += [f"{rel}:{line}: function {fn} is {length} lines (over {MAX_FUNCTION_LINES})"
            for fn, line, length in mod.long_functions]
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--graph", type=int, default=1, help="print the graph (1) or not (0)")
  args = parser.parse_args(argv)
  modules = scan()
  edges = _edges(modules)
  if args.graph:
    print(f"{len(modules)} modules, {sum(m.lines for m in modules.values())} lines; lines, "
          "module, the mia_jax modules it imports")
    for name in sorted(modules):
      deps = ", ".join(sorted(d.removeprefix(PACKAGE + ".") for d in edges[name])) or "-"
      print(f"{modules[name].lines:5d}  {name.removeprefix(PACKAGE + '.') or PACKAGE}  imports: {deps}")
  found = problems(modules)
  print(f"cycles: {len(cycles(modules))}")
  for line in found:
    print(line)
  print("house rules: " + ("all pass" if not found else f"{len(found)} problem(s)"))
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
