"""Every ```python block of every docs page runs, top to bottom, one page per fresh interpreter.

Pages run in a temporary directory (so their runs/ folders land there). A block fenced as
```{.python .no-run}``` is shown but not executed (for commands that would take too long). A block fenced as
```{.text .output}``` is output the page's code prints: each of its lines must appear in the page's stdout, in order
(plain ```text``` blocks show output that depends on the machine: timings, training results). Pages whose
blocks train for minutes are in the slow set, which CI runs after the default suite.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
OUTPUT = re.compile(r"^```\{\.text \.output\}[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text()))
# Pages that train for minutes (CAQL for 6k steps and bnb with the filter; the dialogue managers and MoE-LM), or
# start a Ray cluster and its actors, or train the digits test bed on a fresh cache (about six minutes).
SLOW_PAGES = {"tutorials/caql-constrained.md", "tutorials/dialogue.md", "tutorials/distributed.md",
              "tutorials/diffusion-digits.md"}


def page_code(page: Path) -> str:
    blocks = BLOCK.findall(page.read_text())
    header = "import torch\ntorch.set_num_threads(1)\n"
    return header + "\n".join(f"# --- block {i + 1}\n{code}" for i, code in enumerate(blocks))


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if str(p.relative_to(DOCS)) in SLOW_PAGES
                                  else p for p in PAGES], ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page_runs(page, tmp_path):
    script = tmp_path / "page.py"
    script.write_text(page_code(page))
    timeout = 1_200 if str(page.relative_to(DOCS)) in SLOW_PAGES else 600
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{page.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    printed = [line.rstrip() for line in done.stdout.splitlines()]
    position = 0
    for block in OUTPUT.findall(page.read_text()):
        for line in filter(None, (line.rstrip() for line in block.splitlines())):
            assert line in printed[position:], f"{page.name}: the documented output line {line!r} was not printed"
            position = printed.index(line, position) + 1


def test_every_docs_page_is_found():
    assert PAGES, "no docs page with python blocks found"


def test_every_fence_renders():
    """Markdown's fences take one word after the backticks (superfences also takes ``{.lang .class}``): a fence
    written ```python no-run``` renders the rest of the page as code."""
    for page in DOCS.rglob("*.md"):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            info = line.strip()[3:].strip() if line.strip().startswith("```") else ""
            assert " " not in info or (info.startswith("{") and info.endswith("}")), (
                f"{page.relative_to(DOCS)}:{number}: fence {line.strip()!r}; write ```{{.python .no-run}} instead")
