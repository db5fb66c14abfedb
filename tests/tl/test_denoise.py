from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sclatent as sl
from sclatent.tl import _autoencode


@pytest.fixture
def trained(pbmc_small):
    model = sl.tl.autoencode(pbmc_small, batch_key="donor_batch", max_epochs=3, progress_bar=False, return_model=True)
    return model, pbmc_small


def test_gene_subset_matches_the_full_layer(trained):
    model, adata = trained
    genes = list(adata.var_names[[7, 3, 120]])
    sl.tl.denoise(adata, model=model, genes=genes)
    sub = adata.obsm["sclatent_denoised"]
    assert isinstance(sub, pd.DataFrame)
    assert list(sub.columns) == genes
    assert (sub.index == adata.obs_names).all()
    full = adata.layers["sclatent_denoised"]
    np.testing.assert_allclose(sub.to_numpy(), full[:, [7, 3, 120]], rtol=1e-5)
    np.testing.assert_allclose(model.get_denoised(genes=genes), full[:, [7, 3, 120]], rtol=1e-5)


def test_full_layer_follows_the_data_gene_order(trained):
    model, adata = trained
    shuffled = adata[:, adata.var_names[::-1]].copy()
    sl.tl.denoise(shuffled, model=model, key_added="again")
    np.testing.assert_allclose(shuffled.layers["again_denoised"], adata.layers["sclatent_denoised"][:, ::-1], rtol=1e-5)


def test_bad_input_is_refused(trained, pbmc_hvg):
    model, adata = trained
    with pytest.raises(KeyError, match="not among the model's genes"):
        sl.tl.denoise(adata, model=model, genes=["not-a-gene"])
    with pytest.raises(ValueError, match="pass `genes=`"):
        sl.tl.denoise(pbmc_hvg[: adata.n_obs].copy(), model=model)
    untrained = sl.models.Autoencoder(adata)
    with pytest.raises(ValueError, match="not trained"):
        sl.tl.denoise(adata, model=untrained)


def test_large_denoised_layer_is_not_written_by_default(pbmc_small, monkeypatch):
    # the threshold lowered below this data set's layer stands for a data set too large for it
    monkeypatch.setattr(_autoencode, "DENOISE_MAX_BYTES", pbmc_small.n_obs * pbmc_small.n_vars * 4 - 1)
    adata = pbmc_small
    said = []
    info = _autoencode.logg.info
    monkeypatch.setattr(_autoencode.logg, "info", lambda msg, **kw: said.append(msg) or info(msg, **kw))
    sl.tl.autoencode(adata, max_epochs=2, progress_bar=False)
    assert any("denoise=True" in m and "sl.tl.denoise" in m for m in said), said
    assert "sclatent_denoised" not in adata.layers
    assert "X_sclatent" in adata.obsm
    assert adata.uns["sclatent"]["params"]["denoise"] is False
    sl.tl.autoencode(adata, max_epochs=2, progress_bar=False, denoise=True, key_added="forced")
    assert "forced_denoised" in adata.layers
