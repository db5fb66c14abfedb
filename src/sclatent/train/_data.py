"""Minibatches sliced straight from a CSR or dense matrix, a whole batch at a time."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class CellData(Dataset):
    """Cells of one matrix plus their library sizes and covariates.

    Indexing with an array of cell indices returns the whole minibatch as a dict of tensors:
    the rows are sliced from the CSR (or dense) matrix in one call and densified batch by
    batch; the full matrix is never densified.

    Parameters
    ----------
    X
        Cells × genes, CSR or dense.
    library
        Total counts per cell.
    cat
        Integer codes of the categorical covariates (cells × keys).
    cont
        Standardised continuous covariates (cells × keys).
    """

    def __init__(self, X, library: np.ndarray, cat: np.ndarray, cont: np.ndarray) -> None:
        self.X = X
        self.library = torch.from_numpy(np.asarray(library, dtype=np.float32)).reshape(-1, 1)
        self.cat = torch.from_numpy(np.asarray(cat, dtype=np.int64))
        self.cont = torch.from_numpy(np.asarray(cont, dtype=np.float32))

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx)
        if isinstance(self.X, np.ndarray) or sp.issparse(self.X):
            rows = self.X[idx]
        else:  # backed data are read in increasing order, then put back in the order asked for
            order = np.argsort(idx)
            rows = self.X[idx[order]][np.argsort(order)]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        t = torch.from_numpy(rows.astype(np.float32, copy=False))
        return {"x": t, "library": self.library[idx], "cat": self.cat[idx], "cont": self.cont[idx]}


class BatchIndexSampler(Sampler):
    """Yield arrays of cell indices, one per minibatch, reshuffled every epoch from a seed.

    A last batch of a single cell is dropped when shuffling (batch norm needs two).
    """

    def __init__(self, indices: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size
        full, rest = divmod(n, b)
        return full + (1 if rest > 1 or (rest == 1 and not self.shuffle) else 0)

    def __iter__(self):
        idx = self.indices
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(idx)
            self.epoch += 1
        for i in range(len(self)):
            # sorted within the batch: faster CSR slicing, and what backed (h5py) data need
            yield np.sort(idx[i * self.batch_size : (i + 1) * self.batch_size])


def make_loader(data: CellData, indices: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """Return a :class:`~torch.utils.data.DataLoader` over ``indices`` that fetches whole batches."""
    sampler = BatchIndexSampler(indices, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(data, sampler=sampler, batch_size=None)
