"""The README's "Using the pieces on their own" examples run as written.

Every ```python block of that section is executed, in order. A block starts in a fresh
namespace unless its first line is `# continues the previous block`; then it runs in the
namespace its predecessor left (so a chain of blocks is one test, named by its first block's
position). What a block prints is captured, and must be non-empty where it prints; a block
checks its own claims with assert or numpy.testing, so it fails here when they stop holding.
A chain with a line `# slow` in one of its blocks (over ~20 s on the 2-core CPU) is marked
slow, so it runs with the slow tests.
"""

import contextlib
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
SECTION = "## Using the pieces on their own"
CONTINUES = "# continues the previous block"
SLOW = "# slow"


def _section(text: str) -> str:
  start = text.index(SECTION)
  end = text.find("\n## ", start + len(SECTION))
  return text[start:end if end >= 0 else len(text)]


def blocks(text: str) -> list[str]:
  """The ```python blocks of the README's section, in order."""
  return re.findall(r"^```python\n(.*?)^```$", _section(text), flags=re.S | re.M)


def chains(text: str) -> list[list[str]]:
  """The blocks grouped into chains that share a namespace."""
  out = []
  for block in blocks(text):
    if block.startswith(CONTINUES) and out:
      out[-1].append(block)
    else:
      out.append([block])
  return out


def _chains():
  with open(README) as f:
    return chains(f.read())


def test_the_section_has_examples_and_chains_are_well_formed():
  text = open(README).read()
  assert len(blocks(text)) >= 2, f"no python blocks under {SECTION!r}"
  assert not blocks(text)[0].startswith(CONTINUES)
  assert sum(len(c) for c in chains(text)) == len(blocks(text))
  # the parser finds exactly the fenced blocks: none is left out of a chain
  assert chains("## Using the pieces on their own\n```python\na = 1\n```\nx\n```python\n"
                f"{CONTINUES}\nb = a\n```\n## Next\n```python\nc = 2\n```\n") == [
                    ["a = 1\n", f"{CONTINUES}\nb = a\n"]]


def _params():
  slow = lambda chain: any(line.strip() == SLOW for b in chain for line in b.splitlines())
  return [pytest.param(i, marks=[pytest.mark.slow] if slow(c) else [], id=f"chain{i}")
          for i, c in enumerate(_chains())]


@pytest.mark.parametrize("index", _params())
def test_readme_example_runs(index):
  namespace = {"__name__": "__readme__"}
  for block in _chains()[index]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      exec(compile(block, f"README.md[{SECTION}] chain {index}", "exec"), namespace)
    if "print(" in block:
      assert printed.getvalue().strip(), "a block that prints printed nothing"
