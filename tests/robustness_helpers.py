"""Snapshots of every slot of an AnnData, to prove a call left it as it was."""

from __future__ import annotations

import pickle

import numpy as np
import scipy.sparse as sp


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
