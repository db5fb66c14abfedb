"""Helpers that several test modules share: AnnData snapshots, batch mixing, the paul15 training settings.

A plain module with a name no other distribution uses, importable because pytest puts ``tests/`` on ``sys.path``
(``pythonpath`` in pyproject.toml). Nothing imports the tests by a package name ``tests``: site-packages can hold
another ``tests`` package (scib-metrics' dependency plottable installs one), which would shadow ours.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

#: How the paul15 model is trained for the trajectory tests (also what the tutorial does): sclatent 0.1's
#: 10-dimensional latent and raw log1p input, with today's decoder axes. On paul15 they order both lineages
#: ahead of scanpy's DPT on principal components (docs/benchmarks/trajectory.md has the other settings).
PAUL15_TRAINING = {"n_top_genes": 1000, "n_latent": 10, "normalize_input": False}


def other_batch_fraction(emb: np.ndarray, batch, k: int = 15) -> float:
    """Mean fraction of a cell's k nearest neighbours from another batch, relative to random mixing."""
    idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)[:, 1:]
    b = np.asarray(batch)
    observed = (b[idx] != b[:, None]).mean(1).mean()
    counts = {v: (b == v).sum() for v in np.unique(b)}
    expected = np.mean([(len(b) - counts[v]) / (len(b) - 1) for v in b])
    return float(observed / expected)


def _dense(x):
    if sp.issparse(x):
        return ("sparse", x.format, x.toarray())
    return ("dense", np.asarray(x).copy())


def snapshot(adata) -> bytes:
    """Every slot: X, layers, obs, var, obsm, varm, obsp, varp, uns, names, as comparable bytes."""
    state = {
        "X": _dense(adata.X) if adata.X is not None else None,
        "layers": {k: _dense(v) for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obs_names": list(adata.obs_names),
        "var_names": list(adata.var_names),
        "obsm": {k: _dense(v) for k, v in adata.obsm.items()},
        "varm": {k: _dense(v) for k, v in adata.varm.items()},
        "obsp": {k: _dense(v) for k, v in adata.obsp.items()},
        "varp": {k: _dense(v) for k, v in adata.varp.items()},
        "uns": adata.uns.copy() if hasattr(adata.uns, "copy") else dict(adata.uns),
    }
    return pickle.dumps(state)


def assert_unchanged(adata, before: bytes) -> None:
    after = pickle.loads(snapshot(adata))
    old = pickle.loads(before)
    for slot in old:
        a, b = old[slot], after[slot]
        if slot in ("obs", "var"):
            assert a.equals(b), slot
        else:
            assert pickle.dumps(a) == pickle.dumps(b), f"adata.{slot} changed"


#: What a message says to do: an imperative (pass, run, call, ...) or the value an argument must have.
FIX = re.compile(
    r"\b(pass|run|call|use|set|remove|fill|drop|add|install|lower|increase|train|keep|convert|check|load|save|pick"
    r"|choose|store|compute|leave|try|register|subset)\b|\bmust be\b",
    re.IGNORECASE,
)


def assert_names_fix(error: BaseException | str) -> None:
    """Assert that an error message says what to do about it, not only what is wrong."""
    message = error if isinstance(error, str) else str(error.args[0] if error.args else error)
    assert FIX.search(message), f"the message names no fix: {message!r}"
