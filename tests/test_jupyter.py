"""In a Jupyter kernel, `import sclatent` is quiet and the training progress bar shows, with or without ipywidgets."""

from __future__ import annotations

import importlib.util

import nbformat
import pytest
from nbclient import NotebookClient

IMPORT = "import sclatent as sl"
TRAIN = """\
import numpy as np

adata = sl.datasets.pbmc3k()
adata = adata[:200, np.argsort(-np.asarray(adata.X.sum(0)).ravel())[:100]].copy()
sl.tl.autoencode(adata, max_epochs=3, early_stopping=False)
"""


def _run(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    return nb


def _widget_states(nb: nbformat.NotebookNode, model: str) -> list[dict]:
    """The final state of every ipywidgets ``model`` the notebook displayed."""
    states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [w["state"] for w in states.values() if w["model_name"] == model]


def _text(outputs: list[dict]) -> str:
    parts = []
    for out in outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("ipywidgets", ["as installed", "missing"])
def test_quiet_import_and_progress_bar_in_jupyter(ipywidgets):
    hide = "import sys\nsys.modules['ipywidgets'] = None  # as if not installed"
    cells = [hide, IMPORT, TRAIN] if ipywidgets == "missing" else [IMPORT, TRAIN]
    nb = _run(cells)
    imported, trained = nb.cells[-2].outputs, nb.cells[-1].outputs
    assert imported == [], _text(imported)  # no "IProgress not found" or any other output
    assert "IProgress" not in _text(trained)
    widgets = ipywidgets == "as installed" and importlib.util.find_spec("ipywidgets") is not None
    if widgets:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in trained), trained
        assert [(w["value"], w["max"]) for w in _widget_states(nb, "FloatProgressModel")] == [(3, 3)]
    else:
        bar = "".join(o.get("text", "") for o in trained if o.get("name") == "stderr")
        assert "Training: 100%" in bar
        assert "3/3" in bar
