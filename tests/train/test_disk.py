"""Training from disk (``backed="r"``): out-of-core batches, every cell once, quality as in memory."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import sclatent as sl
from sclatent.train import _data
from sclatent.train._data import CellData, DiskBatches, n_batches

from sclatent_test_helpers import assert_names_fix


@pytest.fixture
def on_disk(pbmc_hvg, tmp_path):
    path = tmp_path / "pbmc.h5ad"
    pbmc_hvg.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    yield pbmc_hvg, backed
    backed.file.close()


def _data_with_ids(X) -> CellData:
    """CellData whose one continuous covariate is each cell's index, so that a batch says which cells it holds."""
    n = X.shape[0]
    return CellData(X, np.ones(n), np.zeros((n, 0)), np.arange(n, dtype=np.float32).reshape(-1, 1))


@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_every_training_cell_once_per_epoch_with_its_own_counts(pbmc_hvg, tmp_path, storage):
    memory = pbmc_hvg[:1500].copy()
    if storage == "dense":
        memory.X = memory.X.toarray()
    memory.write_h5ad(tmp_path / "d.h5ad")
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    train = np.sort(np.random.default_rng(0).choice(memory.n_obs, 1351, replace=False))
    batches = DiskBatches(_data_with_ids(backed.X), train, 128, shuffle=True, chunk_size=64, window=4)
    dense = memory.X.toarray() if sp.issparse(memory.X) else memory.X
    epochs = []
    for _ in range(2):
        cells = []
        for batch in batches:
            ids = batch["cont"][:, 0].numpy().astype(int)
            np.testing.assert_array_equal(batch["x"].numpy(), dense[ids])
            assert len(ids) >= 2
            cells.append(ids)
        assert len(cells) == len(batches) == n_batches(len(train), 128)
        order = np.concatenate(cells)
        np.testing.assert_array_equal(np.sort(order), train)  # each training cell exactly once
        epochs.append(order)
    assert not np.array_equal(*epochs)  # a new order every epoch
    backed.file.close()


def test_a_last_single_cell_joins_the_batch_before(on_disk):
    _, backed = on_disk
    train = np.arange(257)  # 2 × 128 + 1
    sizes = [len(b["x"]) for b in DiskBatches(_data_with_ids(backed.X), train, 128, shuffle=True, chunk_size=64)]
    assert sizes == [128, 129]


def test_batches_draw_from_as_many_places_as_stated(on_disk):
    """A batch mixes cells of about ``window`` chunks: measured, against what ``randomness`` says."""
    _, backed = on_disk
    train = np.arange(backed.n_obs)
    chunk, window = 64, 8
    shuffled = DiskBatches(_data_with_ids(backed.X), train, 128, shuffle=True, chunk_size=chunk, window=window)
    assert f"{window} chunks ({chunk * window} cells)" in shuffled.randomness
    per_batch = [len(np.unique(b["cont"][:, 0].numpy().astype(int) // chunk)) for b in shuffled]
    # 128 cells from 8 chunks of 64: all 8 chunks nearly always appear; never more than a window and a rest
    assert np.median(per_batch) == window
    assert max(per_batch) <= 2 * window
    in_order = DiskBatches(_data_with_ids(backed.X), train, 128, shuffle=False)
    assert max(len(np.unique(b["cont"][:, 0].numpy().astype(int) // chunk)) for b in in_order) <= 3


def _leiden(adata, resolution):
    sc.pp.neighbors(adata, use_rep="X_sclatent", n_neighbors=15, random_state=0)
    sc.tl.leiden(adata, resolution=resolution, flavor="igraph", n_iterations=2, random_state=0)
    return adata.obs["leiden"]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks and windows far smaller than the data (4 to 6 windows an epoch), so that out-of-core batching is what is tested."""
    monkeypatch.setattr(_data, "DISK_CHUNK_SIZE", 32)
    monkeypatch.setattr(_data, "DISK_WINDOW", 4)

    def scaled(n_cells: int) -> None:
        monkeypatch.setattr(_data, "DISK_CHUNK_SIZE", max(32, n_cells // 20))

    return scaled


def test_quality_from_disk_as_in_memory_cellbench(cellbench_3cl, cellbench_3cl_trained, tmp_path, small_chunks):
    cellbench_3cl.write_h5ad(tmp_path / "cb.h5ad")
    backed = ad.read_h5ad(tmp_path / "cb.h5ad", backed="r")
    model = sl.tl.autoencode(backed, batch_key="batch", progress_bar=False, denoise=False, return_model=True)
    assert "chunks of 32 consecutive cells read in a random order; 4 chunks" in model.training_info["batches"]
    memory = cellbench_3cl_trained[0].copy()  # the same settings, trained in memory
    labels = cellbench_3cl.obs["cell_line_demuxlet"]
    from_disk = backed.to_memory()
    from_disk.obsm["X_sclatent"] = backed.obsm["X_sclatent"]
    ari_disk = adjusted_rand_score(labels, _leiden(from_disk, 0.1))
    ari_memory = adjusted_rand_score(labels, _leiden(memory, 0.1))
    assert abs(ari_disk - ari_memory) <= 0.02, (ari_disk, ari_memory)
    assert ari_disk >= 0.95
    backed.file.close()


@pytest.mark.slow  # the CellBench test above checks the same from disk in half the time
def test_quality_from_disk_as_in_memory_pbmc(on_disk, small_chunks):
    memory, backed = on_disk
    memory = memory.copy()
    small_chunks(memory.n_obs)  # chunks of 131 cells, 4 to a window: 5 windows an epoch
    sl.tl.autoencode(backed, progress_bar=False, denoise=False)
    sl.tl.autoencode(memory, progress_bar=False, denoise=False)
    from_disk = backed.to_memory()
    from_disk.obsm["X_sclatent"] = backed.obsm["X_sclatent"]
    nmi_disk = normalized_mutual_info_score(memory.obs["cell_type"], _leiden(from_disk, 0.5))
    nmi_memory = normalized_mutual_info_score(memory.obs["cell_type"], _leiden(memory, 0.5))
    assert abs(nmi_disk - nmi_memory) <= 0.02, (nmi_disk, nmi_memory)


def test_backed_genes_in_another_order_fail_before_reading(pbmc_small, tmp_path):
    pbmc_small.write_h5ad(tmp_path / "s.h5ad")
    backed = ad.read_h5ad(tmp_path / "s.h5ad", backed="r")
    model = sl.models.Autoencoder(backed)
    model.fit(max_epochs=1, progress_bar=False)
    # genes in another order: reordering a backed matrix would read all of it into memory
    reordered = pbmc_small[:, ::-1].copy()
    reordered.write_h5ad(tmp_path / "r.h5ad")
    other = ad.read_h5ad(tmp_path / "r.h5ad", backed="r")
    with pytest.raises(ValueError, match="not the model's, in the model's order") as raised:
        model.get_latent(other)
    assert_names_fix(raised.value)
    other.file.close()
    backed.file.close()


def test_read_rows_of_scattered_and_repeated_cells(on_disk):
    memory, backed = on_disk
    data = _data_with_ids(backed.X)
    dense = memory.X.toarray()
    for cells in (np.array([5, 5, 7]), np.arange(0, memory.n_obs, 10), np.array([0, 1, 2, 2000, 2001, 2637])):
        np.testing.assert_array_equal(data.read_rows(cells).toarray(), dense[cells])


def _zarr_backed(adata, path) -> ad.AnnData:
    """An AnnData whose counts stay in a zarr store, read as a backed sparse matrix (as the docs show)."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zarr v2.*", category=UserWarning)  # anndata's format notice
        adata.write_zarr(path)
    store = zarr.open(path, mode="r")
    return ad.AnnData(
        X=ad.io.sparse_dataset(store["X"]), obs=ad.io.read_elem(store["obs"]), var=ad.io.read_elem(store["var"])
    )


def test_a_zarr_store_trains_out_of_core_as_an_h5ad_file_does(pbmc_small, tmp_path):
    pbmc_small.write_h5ad(tmp_path / "s.h5ad")
    h5ad = ad.read_h5ad(tmp_path / "s.h5ad", backed="r")
    store = _zarr_backed(pbmc_small, tmp_path / "s.zarr")
    settings = {"max_epochs": 3, "progress_bar": False, "denoise": False, "return_model": True}
    from_h5ad = sl.tl.autoencode(h5ad, **settings)
    from_zarr = sl.tl.autoencode(store, **settings)
    assert from_zarr._data[0] is store.X  # read from the store batch by batch, never loaded
    assert "chunks of" in from_zarr.training_info["batches"]
    # the same cells in the same batches with the same counts: the same model
    np.testing.assert_array_equal(store.obsm["X_sclatent"], h5ad.obsm["X_sclatent"])
    np.testing.assert_array_equal(from_zarr.history.to_numpy(), from_h5ad.history.to_numpy())
    # genes in another order would need the whole matrix: an error, as for a backed file
    reordered = _zarr_backed(pbmc_small[:, ::-1].copy(), tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="backed store are not the model's") as raised:
        from_zarr.get_latent(reordered)
    assert_names_fix(raised.value)
    h5ad.file.close()


def test_matrices_that_cannot_be_read_by_cells_fail_before_training(pbmc_small, tmp_path):
    csc = pbmc_small.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "c.h5ad")
    backed = ad.read_h5ad(tmp_path / "c.h5ad", backed="r")
    with pytest.raises(ValueError, match="stored by genes") as raised:
        sl.tl.autoencode(backed, max_epochs=1, progress_bar=False)
    assert_names_fix(raised.value)
    assert "X_sclatent" not in backed.obsm
    backed.file.close()
