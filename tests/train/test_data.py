import numpy as np
import scipy.sparse as sp

from sclatent.train import BatchIndexSampler, CellData, make_loader


def test_batches_cover_every_cell_once_and_reshuffle():
    sampler = BatchIndexSampler(np.arange(10, 110), 32, shuffle=True, seed=0)
    first = np.concatenate(list(sampler))
    second = np.concatenate(list(sampler))
    assert sorted(first) == list(range(10, 110))  # 3×32 + 4
    assert not np.array_equal(first, second)
    again = BatchIndexSampler(np.arange(10, 110), 32, shuffle=True, seed=0)
    np.testing.assert_array_equal(np.concatenate(list(again)), first)


def test_single_cell_last_batch_dropped_when_shuffling():
    assert len(BatchIndexSampler(np.arange(65), 32, shuffle=True)) == 2
    assert len(BatchIndexSampler(np.arange(65), 32, shuffle=False)) == 3


def test_sparse_rows_sliced_per_batch(pbmc_hvg):
    X = pbmc_hvg.X
    data = CellData(X, np.asarray(X.sum(1)).ravel(), np.zeros((X.shape[0], 0)), np.zeros((X.shape[0], 0)))
    assert sp.issparse(data.X)  # kept sparse; only batches are densified
    idx = np.array([5, 1, 700])
    batch = data[idx]
    np.testing.assert_array_equal(batch["x"].numpy(), X[idx].toarray())
    np.testing.assert_allclose(batch["library"].numpy().ravel(), np.asarray(X[idx].sum(1)).ravel())
    loader = make_loader(data, np.arange(X.shape[0]), 256, shuffle=False)
    sizes = [b["x"].shape[0] for b in loader]
    assert sum(sizes) == X.shape[0]
    assert max(sizes) == 256
