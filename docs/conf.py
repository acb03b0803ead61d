"""Sphinx configuration: MyST markdown, notebooks rendered by myst-nb without re-execution."""

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
napoleon_google_docstring = True
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
