"""Model files: a directory with ``config.json`` (settings, genes, history) and ``model.pt`` (tensors only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
FORMAT = 1


def history_to_json(history: pd.DataFrame) -> dict[str, list]:
    """Return the per-epoch losses with NaN as ``None`` (JSON has no NaN)."""
    return {k: [None if np.isnan(v) else v for v in history[k]] for k in history}


def history_from_json(hist: dict[str, list]) -> pd.DataFrame:
    """Return the per-epoch losses written by :func:`history_to_json`."""
    return pd.DataFrame(
        {k: np.array([np.nan if v is None else v for v in hist[k]], dtype=float) for k in hist},
        index=pd.RangeIndex(len(hist.get("train_loss", [])), name="epoch"),
    )


def check_checkpoint_dir(path: str | Path, validation_fraction: float) -> None:
    """Raise before training unless checkpoints can be written to directory ``path``: a best epoch, and a writable directory."""
    if validation_fraction == 0:
        msg = "checkpoint_dir saves the best model by validation loss; set validation_fraction > 0."
        raise ValueError(msg)
    path = Path(path)
    if path.exists() and not path.is_dir():
        msg = f"checkpoint_dir {str(path)!r} is a file, not a directory; pass a directory path (it is created if missing)."
        raise ValueError(msg)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"checkpoint_dir {str(path)!r} cannot be created ({e.strerror}); pass a directory you can write to."
        raise ValueError(msg) from None
    if not os.access(path, os.W_OK):
        msg = f"checkpoint_dir {str(path)!r} is not writable; pass a directory you can write to."
        raise ValueError(msg)


def write_model(path: str | Path, meta: dict, module: torch.nn.Module, *, kind: str, overwrite: bool) -> None:
    """Write ``meta`` (JSON-serialisable) and the module's tensors to directory ``path``."""
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir()):
        msg = f"{path} exists and is not empty; pass overwrite=True to replace it."
        raise FileExistsError(msg)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "sclatent_version": __version__, "model_class": kind, **meta}
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path / WEIGHTS_FILE)


def read_model(path: str | Path, *, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read what :func:`write_model` wrote for a model of class ``kind``: the settings and the tensors."""
    path = Path(path)
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        msg = f"{path} has no {CONFIG_FILE}; pass the directory that `model.save(path)` wrote."
        raise FileNotFoundError(msg) from None
    except json.JSONDecodeError as e:
        msg = f"{path / CONFIG_FILE} is corrupted ({e}); save the model again with `model.save(path, overwrite=True)`."
        raise ValueError(msg) from None
    if meta.get("format") != FORMAT:
        msg = f"{path} was written in model format {meta.get('format')!r} (sclatent {meta.get('sclatent_version')}); this sclatent ({__version__}) reads format {FORMAT}. Load it with the sclatent version that wrote it, or train the model again."
        raise ValueError(msg)
    written = meta.get("model_class", "Autoencoder")  # files of sclatent 0.1 hold autoencoders only
    if written != kind:
        msg = f"{path} holds a {written}, not a {kind}; load it with `sl.models.{written}.load(path)`."
        raise ValueError(msg)
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        msg = f"{path / WEIGHTS_FILE} could not be read; the file is corrupted or truncated ({type(e).__name__}: {e}); save the model again with `model.save(path, overwrite=True)`."
        raise ValueError(msg) from None
    return meta, state
