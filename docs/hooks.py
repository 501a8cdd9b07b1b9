"""MkDocs hooks: publish the figures of benchmarks/results/ so that the Benchmarks page can embed them, and show
the Sphinx roles of the docstrings (``:class:`~rlcore.loops.RunConfig` ``) as the code they name."""

import re
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def on_files(files, config):
    for figure in sorted(RESULTS.glob("*.png")):
        files.append(File(figure.name, str(RESULTS), config["site_dir"], config["use_directory_urls"]))
        # Served as /<name>.png, so pages link it as ../<name>.png or <name>.png.
    return files


# mkdocstrings renders a docstring's :class:`~a.b.C` as the text ":class:" and the code "~a.b.C".
ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _show_role(match: re.Match) -> str:
    short, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html, page, config, files):
    return ROLE.sub(_show_role, html)
