"""Sphinx configuration: MyST markdown, notebooks rendered by myst-nb without re-execution."""

import re
import shutil
from pathlib import Path

import sciml

project = "sciml"
author = "sciml developers"
release = sciml.__version__
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
nb_execution_mode = "off"  # CI executes the notebooks with nbmake; the docs only render them
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Lightning's hook docstrings refer to its own docs; only document what sciml writes.
autodoc_inherit_docstrings = False

napoleon_google_docstring = True
napoleon_use_ivar = True  # "Attributes:" as fields, so NamedTuple fields are not described twice
html_theme = "furo"
html_title = "sciml"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]
nitpicky = False

# The tutorials live in notebooks/ at the repository root; copy them in so Sphinx sees them.
_here = Path(__file__).parent
(_here / "notebooks").mkdir(exist_ok=True)
for notebook in sorted((_here.parent / "notebooks").glob("*.ipynb")):
    shutil.copy2(notebook, _here / "notebooks" / notebook.name)


# Docstrings write maths as $...$ and $$...$$ (readable in a terminal); turn them into RST roles.
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE = re.compile(r"(?<![\\$])\$(?!\$)((?:[^$\n]|\n(?!\s*\n))+?)\$")  # may wrap lines


def _dollar_math(app, what, name, obj, options, lines):
    text = "\n".join(lines)
    text = _DISPLAY.sub(
        lambda m: "\n\n.. math::\n\n   " + " ".join(m.group(1).split()) + "\n\n", text
    )
    text = _INLINE.sub(lambda m: f":math:`{' '.join(m.group(1).split())}`", text)
    lines[:] = text.split("\n")


def setup(app):
    app.connect("autodoc-process-docstring", _dollar_math)
