"""Serve MathJax 3 from an installed package, so that the book's math renders offline.

The PyPI package django-static-mathjax ships MathJax 3.2.2's `es5/` bundle (scripts and fonts)
inside the importable package `mathjax`; nothing of it is committed here. This extension copies
that bundle to `_static/mathjax/` of the HTML output and points Sphinx's `mathjax_path` at it.
It is kept out of the book's own `_static/` folder on purpose: Jupyter Book 1 loads every
script found there on every page.
"""

from pathlib import Path

import mathjax
from sphinx.util.fileutil import copy_asset

BUNDLE = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _set_path(app, config):
    config.mathjax_path = "mathjax/tex-mml-chtml.js"


def _copy_bundle(app, exception):
    if exception is None and app.builder.format == "html":
        copy_asset(str(BUNDLE), str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    if not (BUNDLE / "tex-mml-chtml.js").is_file():
        raise RuntimeError(f"MathJax bundle not found at {BUNDLE}; pip install django-static-mathjax==3.2.2.1")
    app.connect("config-inited", _set_path)
    app.connect("build-finished", _copy_bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
