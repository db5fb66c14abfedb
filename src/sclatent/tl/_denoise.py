from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from scanpy import logging as logg

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from ..models import Autoencoder


def denoise(
    adata: AnnData,
    *,
    model: Autoencoder,
    genes: Sequence[str] | None = None,
    transform_batch: str | None = None,
    library_size: float = 1e4,
    key_added: str = "sclatent",
    batch_size: int = 4096,
    copy: bool = False,
) -> AnnData | None:
    """Denoised expression of a trained model, for every gene or only some.

    What :func:`sclatent.tl.autoencode` writes to ``layers`` while it is small, for any data set
    and any subset of genes: on a large data set, ``genes=`` keeps it to cells × those genes.

    Parameters
    ----------
    adata
        Cells × genes with every gene the model was trained on (matched by name) and only
        batch categories it has seen.
    model
        A trained :class:`~sclatent.models.Autoencoder` (``sl.tl.autoencode(..., return_model=True)``).
    genes
        Gene names. ``None`` gives every gene; ``adata`` must then hold exactly the model's genes.
    transform_batch
        Decode every cell as if it were in this batch (a category of the model's ``batch_key``).
    library_size
        Library size to normalise to (count likelihoods): expression per 10,000 counts by default.
    key_added
        Name under which the result is stored.
    batch_size
        Cells per forward pass.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` with ``copy=True``. Sets one of these fields:

    ``adata.layers['{key_added}_denoised']`` : :class:`numpy.ndarray` (dtype ``float32``)
        With ``genes=None``: denoised expression of every gene, in ``adata.var_names`` order.
    ``adata.obsm['{key_added}_denoised']`` : :class:`pandas.DataFrame` (dtype ``float32``)
        With ``genes``: cells × those genes, one column per gene.

    Examples
    --------
    >>> import sclatent as sl
    >>> model = sl.tl.autoencode(adata, return_model=True)  # doctest: +SKIP
    >>> sl.tl.denoise(adata, model=model, genes=["CD14", "LYZ", "MS4A1"])  # doctest: +SKIP
    >>> adata.obsm["sclatent_denoised"]  # doctest: +SKIP
    """
    if not getattr(model, "is_trained", False):
        msg = (
            "the model is not trained; train it first with `model.fit()` or `sl.tl.autoencode(..., return_model=True)`."
        )
        raise ValueError(msg)
    if genes is None:
        extra = adata.var_names.difference(pd.Index(model.setup.var_names))
        if len(extra):
            msg = f"adata has {len(extra)} genes the model was not trained on (e.g. {extra[:5].tolist()}), so a full layer cannot be written; pass `genes=` (written to obsm) or subset adata to the model's genes first."
            raise ValueError(msg)
        order = list(adata.var_names)
    else:
        order = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    start = logg.info(f"denoising {adata.n_obs} cells × {len(order)} genes")
    values = model._latent_and_denoised(adata, order, transform_batch, library_size, batch_size)[1]
    adata = adata.copy() if copy else adata
    if genes is None:
        adata.layers[f"{key_added}_denoised"] = values
        where = f"'{key_added}_denoised', denoised expression (adata.layers)"
    else:
        adata.obsm[f"{key_added}_denoised"] = pd.DataFrame(values, index=adata.obs_names, columns=order)
        where = f"'{key_added}_denoised', denoised expression of {len(order)} genes (adata.obsm)"
    logg.info("    finished", time=start, deep=f"added\n    {where}")
    return adata if copy else None
