"""The resampled cells that the scale benchmark trains on keep the source's genes, counts and sparsity."""

from __future__ import annotations

import numpy as np
from benchmarks._data import load_pbmc
from benchmarks.scale import resample


def test_resampled_cells_look_like_the_source():
    source = load_pbmc()
    cells = resample(3_000, seed=1, chunk=1_000)
    assert cells.shape == (3_000, source.n_vars)
    assert list(cells.var_names) == list(source.var_names)
    data = cells.X.data
    assert (data > 0).all()
    assert np.array_equal(data, np.round(data))  # counts
    # a Poisson redraw around each cell's counts keeps library sizes and detected genes close to the source's
    lib_source, lib_new = np.asarray(source.X.sum(1)).mean(), np.asarray(cells.X.sum(1)).mean()
    assert abs(lib_new / lib_source - 1) < 0.1
    assert 0.6 < (cells.X.nnz / cells.n_obs) / (source.X.nnz / source.n_obs) < 1.0
    # and the cells differ from each other (not one cell copied)
    assert len({cells.X[i].nnz for i in range(100)}) > 20
