import numpy as np
import scipy.sparse as sp
import torch

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


def test_batches_are_built_where_the_data_are(pbmc_hvg):
    # on the meta device tensors have no values: building a batch there proves that it needs no
    # copy back to the host (the GPU path), only the index array going to the device
    X = pbmc_hvg.X
    cat = np.arange(X.shape[0])[:, None] % 3
    data = CellData(X, np.asarray(X.sum(1)).ravel(), cat, np.zeros((X.shape[0], 0))).to("meta")
    batch = data[np.array([3, 10, 11, 400])]
    assert all(v.device.type == "meta" for v in batch.values())
    assert batch["x"].shape == (4, X.shape[1])
    assert batch["cat"].shape == (4, 1)


def test_dense_and_sparse_give_the_same_batches(pbmc_hvg):
    X = pbmc_hvg.X
    lib = np.asarray(X.sum(1)).ravel()
    none = np.zeros((X.shape[0], 0))
    idx = np.sort(np.random.default_rng(0).choice(X.shape[0], 300, replace=False))
    sparse, dense = CellData(X, lib, none, none)[idx], CellData(X.toarray(), lib, none, none)[idx]
    np.testing.assert_array_equal(sparse["x"].numpy(), dense["x"].numpy())
    assert sparse["x"].dtype == torch.float32


def test_float32_csr_is_shared_not_copied(pbmc_hvg):
    X = pbmc_hvg.X
    assert X.dtype == np.float32
    data = CellData(X, np.asarray(X.sum(1)).ravel(), np.zeros((X.shape[0], 0)), np.zeros((X.shape[0], 0)))
    assert np.shares_memory(data._csr[1].numpy(), X.data)
