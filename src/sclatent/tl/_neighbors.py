"""The kNN graph on a latent space, under its own key, shared by Leiden, UMAP, pseudotime and PAGA."""

from __future__ import annotations

from typing import TYPE_CHECKING

import scanpy as sc

if TYPE_CHECKING:
    from anndata import AnnData


def default_neighbors_key(use_rep: str) -> str:
    """``"X_sclatent"`` → ``"sclatent_neighbors"``."""
    return f"{use_rep.removeprefix('X_')}_neighbors"


def require_rep(adata: AnnData, use_rep: str) -> None:
    """Fail early, naming the step to run first, when the latent is missing."""
    if use_rep not in adata.obsm:
        hint = "run `sl.tl.autoencode(adata)` first" if use_rep.startswith("X_sclatent") else "compute it first"
        msg = f"adata.obsm[{use_rep!r}] not found; {hint} (or pass `use_rep=` one of {list(adata.obsm)})."
        raise KeyError(msg)


def ensure_neighbors(
    adata: AnnData, *, use_rep: str, n_neighbors: int, neighbors_key: str | None, random_state: int
) -> str:
    """Build the kNN graph on ``use_rep`` under ``neighbors_key`` unless one with the same settings is there.

    Returns the key. The user's default ``uns['neighbors']`` and ``obsp['connectivities']`` are
    only touched when ``neighbors_key='neighbors'`` is asked for.
    """
    require_rep(adata, use_rep)
    key = neighbors_key or default_neighbors_key(use_rep)
    existing = adata.uns.get(key)
    if existing is not None:
        params = existing.get("params", {})
        same = (
            params.get("use_rep") == use_rep
            and int(params.get("n_neighbors", -1)) == n_neighbors
            and existing.get("connectivities_key") in adata.obsp
            and adata.obsp[existing["connectivities_key"]].shape[0] == adata.n_obs
        )
        if same:
            return key
    sc.pp.neighbors(
        adata,
        n_neighbors=n_neighbors,
        use_rep=use_rep,
        random_state=random_state,
        key_added=None if key == "neighbors" else key,
    )
    return key
