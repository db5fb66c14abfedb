"""Map new data onto a trained model (architecture surgery) and write the query's latent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scanpy import logging as logg

from ._autoencode import _versions, _warn_overwrite

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from anndata import AnnData
    from lightning.pytorch.callbacks import Callback

    from ..models import Autoencoder


def map_query(
    query: AnnData,
    model: Autoencoder,
    *,
    max_epochs: int | None = None,
    early_stopping: bool = True,
    early_stopping_patience: int = 20,
    validation_fraction: float = 0.1,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    min_gene_overlap: float = 0.5,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    progress_bar: bool = True,
    callbacks: Sequence[Callback] = (),
    max_time: str | timedelta | None = None,
    precision: str | None = None,
    key_added: str = "sclatent",
    copy: bool = False,
    return_model: bool = False,
) -> AnnData | Autoencoder | tuple[AnnData, Autoencoder] | None:
    """Map a query onto a trained reference model and write the query's latent, in the reference's latent space.

    The query's new batches are appended to the model and only their weights are trained, on
    the query (architecture surgery, see :meth:`~sclatent.models.Autoencoder.map_query`). The
    reference's latent does not change, so reference and query can be concatenated and analysed
    together, and labels transferred with :func:`~sclatent.tl.transfer_labels`.

    A reference meant for mapping should be trained with ``norm="layer"``: batch normalisation
    normalises the query with the reference's statistics, and queries from another technology
    then mix with the reference far less (see the mapping benchmark in the documentation).

    Parameters
    ----------
    query
        New cells: raw data in the model's layer, the model's covariate columns in ``obs``
        (the batch column may hold new batches), genes matched by name.
    model
        The trained reference model (e.g. from ``sl.tl.autoencode(reference, batch_key=..., return_model=True)``).
    max_epochs, early_stopping, early_stopping_patience, validation_fraction, batch_size, learning_rate
        Training on the query, as for :meth:`~sclatent.models.Autoencoder.fit`.
    min_gene_overlap
        The smallest fraction of the model's genes the query must have; missing genes are filled with zeros.
    accelerator, devices, progress_bar, callbacks, max_time, precision
        As for :func:`~sclatent.tl.autoencode`.
    key_added
        The latent goes to ``query.obsm[f"X_{key_added}"]``; use the reference's key (the default
        is :func:`~sclatent.tl.autoencode`'s) so that the two can be concatenated.
    copy
        Return a copy of ``query`` instead of writing to it.
    return_model
        Also return the mapped model, which knows the reference's and the query's batches (save
        it to map further queries).

    Returns
    -------
    ``None``, or a copy of ``query`` with ``copy=True``; the mapped model with
    ``return_model=True`` (both, as a tuple, with both). Sets:

    ``query.obsm['X_{key_added}']`` : :class:`numpy.ndarray` (dtype ``float32``)
        The query's latent, in the reference's latent space.
    ``query.uns['{key_added}']`` : :class:`dict`
        ``params`` (the model's settings), ``history`` (the query training's losses),
        ``training`` (with ``map_query``: the new categories and genes filled with zeros) and ``versions``.

    Examples
    --------
    >>> model = sl.tl.autoencode(reference, batch_key="batch", norm="layer", return_model=True)  # doctest: +SKIP
    >>> sl.tl.map_query(query, model)  # doctest: +SKIP
    >>> sl.tl.transfer_labels(query, reference, "cell_type")  # doctest: +SKIP
    """
    start = logg.info(f"mapping {query.n_obs} query cells onto the model")
    mapped = model.map_query(
        query,
        max_epochs=max_epochs,
        early_stopping=early_stopping,
        early_stopping_patience=early_stopping_patience,
        validation_fraction=validation_fraction,
        batch_size=batch_size,
        learning_rate=learning_rate,
        min_gene_overlap=min_gene_overlap,
        accelerator=accelerator,
        devices=devices,
        progress_bar=progress_bar,
        callbacks=callbacks,
        max_time=max_time,
        precision=precision,
    )
    latent = mapped.get_latent()
    query = query.copy() if copy else query
    _warn_overwrite(query, key_added, denoised=False)
    query.obsm[f"X_{key_added}"] = latent
    setup = mapped.setup
    params = {
        "layer": setup.layer,
        "batch_key": setup.batch_key,
        "categorical_covariate_keys": list(setup.categorical_covariate_keys),
        "continuous_covariate_keys": list(setup.continuous_covariate_keys),
        **mapped.config.to_dict(),
    }
    query.uns[key_added] = {
        "params": {k: v for k, v in params.items() if v is not None and v != []},
        "history": {k: mapped.history[k].to_numpy() for k in mapped.history},
        "training": mapped.training_info,
        "versions": _versions(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    'X_{key_added}', latent (query.obsm)\n    '{key_added}', parameters and history (query.uns)",
    )
    if return_model:
        return (query, mapped) if copy else mapped
    return query if copy else None
