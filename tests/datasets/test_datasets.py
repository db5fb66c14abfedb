import numpy as np

import sclatent as sl


def test_pbmc3k():
    adata = sl.datasets.pbmc3k()
    assert adata.shape == (2700, 16634)
    assert adata.obs["cell_type"].notna().sum() == 2638
    assert adata.obs["cell_type"].nunique() == 8
    assert np.array_equal(adata.X.data, np.round(adata.X.data))
    assert adata.X.data.min() > 0


def test_paul15():
    adata = sl.datasets.paul15()
    assert adata.shape == (2730, 3451)
    assert adata.obs["paul15_clusters"].nunique() == 19
    assert int(adata.uns["iroot"]) == 840
