"""Code of an earlier git revision, unpacked beside this checkout, for benchmarks that compare before and after."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def unpack(rev: str, into: Path) -> Path:
    """The tree of ``rev`` in ``into/rev`` (``git archive``; nothing in this checkout changes)."""
    target = into / rev
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target
