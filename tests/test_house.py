"""The house rules of mia_jax/ (issue 16), checked from the sources by experiments/import_graph.py:
no import cycle, no mia_jax import hidden inside a function, no module over 400 lines, no function
over 60; and the public surface: every name a package exports in __all__ exists."""

import importlib

import pytest

from experiments import import_graph


def test_the_checker_finds_a_cycle_and_a_hidden_import(tmp_path):
  pkg = tmp_path / "mia_jax"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from mia_jax import b\n")
  (pkg / "b.py").write_text("def f():\n  from mia_jax import a\n  return a\n")
  (pkg / "c.py").write_text("import mia_jax.a\n" + "x = 1\n" * 401)
  modules = import_graph.scan(tmp_path)
  assert import_graph.cycles(modules) == [["mia_jax.a", "mia_jax.b"]]
  assert modules["mia_jax.b"].inner_imports == [(2, "mia_jax.a")]
  assert modules["mia_jax.c"].lines == 402 and modules["mia_jax.c"].imports == {"mia_jax.a"}


def test_mia_jax_keeps_the_house_rules():
  found = import_graph.problems(import_graph.scan())
  assert not found, "\n".join(found)


@pytest.mark.parametrize("package", ["mia_jax", "mia_jax.attacks", "mia_jax.metrics",
                                     "mia_jax.privacy", "mia_jax.training"])
def test_every_exported_name_exists(package):
  module = importlib.import_module(package)
  missing = [name for name in module.__all__ if not hasattr(module, name)]
  assert not missing
