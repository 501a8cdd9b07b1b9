"""MkDocs hook: publish the figures of benchmarks/results/ so that the Benchmarks page can embed them."""

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def on_files(files, config):
    for figure in sorted(RESULTS.glob("*.png")):
        files.append(File(figure.name, str(RESULTS), config["site_dir"], config["use_directory_urls"]))
        # Served as /<name>.png, so pages link it as ../<name>.png or <name>.png.
    return files
