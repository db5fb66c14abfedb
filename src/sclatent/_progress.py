"""The progress bar class: tqdm's widget in Jupyter with ipywidgets, its text bar in a terminal or without ipywidgets.

``sclatent/__init__.py`` imports this module first. In Jupyter without ipywidgets, ``tqdm.auto`` warns
"IProgress not found" when it is first imported and then uses its text bar, which works in Jupyter too. Importing it
here with that one warning silenced keeps ``import sclatent`` quiet, including for scvi-tools and umap-learn, which
import ``tqdm.auto`` themselves (Python imports a module once).
"""

from __future__ import annotations

import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
