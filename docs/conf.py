"""Sphinx configuration: API pages from the docstrings, tutorials rendered from ``tutorials/`` by myst-nb."""

from __future__ import annotations

from datetime import date
from importlib import metadata

project = "sclatent"
copyright = f"{date.today().year}, the sclatent developers"
release = metadata.version("sclatent")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "tutorials/README.md"]
templates_path = ["_templates"]

# The tutorials are executed by the test command (nbmake) and committed with their outputs;
# the docs render those outputs rather than running the notebooks again.
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # Lightning's own docstrings are not ours to render
autodoc_default_options = {"members": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True

# Warnings are errors (make docs runs sphinx-build -W -n). References to other projects are not
# resolved: intersphinx needs their inventories from the network, which the build may not reach.
nitpicky = True
_EXTERNAL = (
    r"(anndata|ad|scanpy|sc|pandas|pd|numpy|np|torch|lightning|pytorch_lightning|scipy|sp|matplotlib|scvi|"
    r"scib_metrics|harmonypy|optuna|collections|pathlib|datetime|typing|os|enum|dataclasses)(\..*)?"
)
nitpick_ignore_regex = [
    (r"py:.*", _EXTERNAL),
    (r"py:class", r"(AnnData|Axes|Figure|Callback|Strategy|DataFrame|Tensor|Path|timedelta|ArrayLike|Sequence|Mapping|Callable|Iterator|Module|Optimizer|Distribution|Dataset|DataLoader|Sampler|LightningModule|Trainer|Literal|optional|Categorical|spmatrix|sparse matrix|array-like)"),
    (r"py:class", r"(default|callable|str|int|float|bool|dict|list|tuple|None)(, optional)?"),
    (r"py:class", r"L\..*"),  # lightning imported as L
    (r"py:class", r".*\s.*|\d+"),  # free-text "Returns" lines that napoleon reads as types
]
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "pydata_sphinx_theme"
html_title = "sclatent"
html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
html_static_path: list[str] = []
