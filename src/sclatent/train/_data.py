"""Minibatches built from a CSR (or dense) matrix a whole batch at a time, on the device that holds it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class CellData(Dataset):
    """Cells of one matrix plus their library sizes and covariates.

    Indexing with an array of cell indices returns the whole minibatch as a dict of tensors.
    An in-memory CSR matrix is held as two tensors (column indices and values, shared with the
    scipy matrix when it is float32, not copied; the row pointers stay on the host) and each batch's rows are
    gathered and densified with torch operations, so that after :meth:`to` a GPU builds its
    batches itself, with no host round trip per batch. Dense matrices are held as one tensor.
    Backed data (``backed="r"``) stay on disk and are read batch by batch. The full matrix is
    never densified.

    Parameters
    ----------
    X
        Cells × genes: CSR, dense, or a backed (h5py) matrix.
    library
        Total counts per cell.
    cat
        Integer codes of the categorical covariates (cells × keys).
    cont
        Standardised continuous covariates (cells × keys).
    labels
        Optional integer class of each cell (for a classifier), given in each batch as ``"y"``.
    """

    def __init__(
        self, X, library: np.ndarray, cat: np.ndarray, cont: np.ndarray, labels: np.ndarray | None = None
    ) -> None:
        self.X = X
        self.shape = X.shape
        self.library = torch.from_numpy(np.asarray(library, dtype=np.float32)).reshape(-1, 1)
        self.cat = torch.from_numpy(np.asarray(cat, dtype=np.int64))
        self.cont = torch.from_numpy(np.asarray(cont, dtype=np.float32))
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self._csr = self._dense = None
        if sp.issparse(X):
            # the row pointers stay on the host: each batch's size is known without waiting for the device
            self._indptr = np.asarray(X.indptr, dtype=np.int64)
            self._csr = (torch.from_numpy(X.indices), torch.from_numpy(np.asarray(X.data, dtype=np.float32)))
        elif isinstance(X, np.ndarray):
            self._dense = torch.from_numpy(np.asarray(X, dtype=np.float32))
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the matrix and per-cell arrays as held in tensors (0 for backed data)."""
        held = [*(self._csr or ()), *([self._dense] if self._dense is not None else [])]
        held += [self.library, self.cat, self.cont, *([self.labels] if self.labels is not None else [])]
        return sum(t.numel() * t.element_size() for t in held)

    @property
    def in_tensors(self) -> bool:
        """Whether the matrix is held in tensors (in memory), rather than read from disk per batch."""
        return self._csr is not None or self._dense is not None

    def to(self, device: torch.device | str) -> CellData:
        """Move the matrix and per-cell arrays to ``device`` (in place); batches are then built there."""
        device = torch.device(device)
        if not self.in_tensors and device.type != "cpu":
            msg = "backed data are read from disk batch by batch and cannot be moved to a device; load them into memory first (`adata.to_memory()`)."
            raise ValueError(msg)
        if self._csr is not None:
            self._csr = tuple(t.to(device) for t in self._csr)
        if self._dense is not None:
            self._dense = self._dense.to(device)
        self.library, self.cat, self.cont = (t.to(device) for t in (self.library, self.cat, self.cont))
        if self.labels is not None:
            self.labels = self.labels.to(device)
        self.device = device
        return self

    def _rows(self, idx: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
        if self._dense is not None:
            return self._dense.index_select(0, rows)
        if self._csr is not None:
            indices, values = self._csr
            starts = self._indptr[idx]
            lengths = self._indptr[idx + 1] - starts
            nnz = int(lengths.sum())
            lengths_t = torch.from_numpy(lengths).to(self.device, non_blocking=True)
            # position of each stored value of the batch in `values`: its row's start plus its rank in the row
            offset = torch.from_numpy(starts - (np.cumsum(lengths) - lengths)).to(self.device, non_blocking=True)
            pos = torch.repeat_interleave(offset, lengths_t, output_size=nnz) + torch.arange(nnz, device=self.device)
            row_of = torch.repeat_interleave(torch.arange(len(idx), device=self.device), lengths_t, output_size=nnz)
            x = torch.zeros(len(idx), self.shape[1], dtype=values.dtype, device=self.device)
            x[row_of, indices[pos].long()] = values[pos]
            return x
        # backed data are read in increasing order, then put back in the order asked for
        order = np.argsort(idx)
        rows_np = self.X[idx[order]][np.argsort(order)]
        rows_np = rows_np.toarray() if sp.issparse(rows_np) else np.asarray(rows_np)
        return torch.from_numpy(rows_np.astype(np.float32, copy=False))

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        rows = torch.from_numpy(idx).to(self.device, non_blocking=True)
        batch = {
            "x": self._rows(idx, rows),
            "library": self.library.index_select(0, rows),
            "cat": self.cat.index_select(0, rows),
            "cont": self.cont.index_select(0, rows),
        }
        if self.labels is not None:
            batch["y"] = self.labels.index_select(0, rows)
        return batch


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
            # sorted within the batch: contiguous reads, and what backed (h5py) data need
            yield np.sort(idx[i * self.batch_size : (i + 1) * self.batch_size])


def make_loader(
    data: CellData, indices: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0, pin_memory: bool = False
) -> DataLoader:
    """Return a :class:`~torch.utils.data.DataLoader` over ``indices`` that fetches whole batches.

    ``pin_memory`` pins host batches for asynchronous copies to a GPU (when the data are not on it).
    """
    sampler = BatchIndexSampler(indices, batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(data, sampler=sampler, batch_size=None, pin_memory=pin_memory)


def holdout_split(
    n: int, fraction: float, rng: np.random.Generator, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` cells into training and held-out positions (both sorted).

    Without ``groups``, a random ``fraction`` of the cells (at least one when ``fraction > 0``,
    none when it is 0).
    With ``groups`` (one label per cell), whole groups are held out, in random order, until
    they hold at least ``fraction`` of the cells, so that no group is on both sides (e.g. donors:
    the held-out loss then measures how the model does on a donor it has not seen). At least one
    group stays in training.
    """
    if groups is None:
        perm = rng.permutation(n)
        n_val = max(round(n * fraction), 1) if fraction > 0 else 0
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    sizes = np.bincount(codes, minlength=len(names))
    held = []
    for g in rng.permutation(len(names))[: len(names) - 1]:
        held.append(g)
        if sizes[held].sum() >= fraction * n:
            break
    is_val = np.isin(codes, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def check_groups(groups, n: int, validation_fraction: float) -> np.ndarray:
    """Return the group labels as strings, checked: one per cell, none missing, at least two groups."""
    labels = pd.Series(np.asarray(groups, dtype=object))
    if len(labels) != n:
        msg = f"validation_groups has {len(labels)} labels for {n} cells; pass one label per training cell, e.g. `adata.obs['donor']`."
        raise ValueError(msg)
    if labels.isna().any():
        msg = f"validation_groups has {int(labels.isna().sum())} missing labels; fill or drop those cells first."
        raise ValueError(msg)
    labels = labels.astype(str).to_numpy()
    if len(set(labels)) < 2:
        msg = "validation_groups has a single group, so none can be held out; pass a column with two or more groups, or leave it out for a random split."
        raise ValueError(msg)
    if validation_fraction == 0:
        msg = "validation_groups holds out whole groups for validation; set validation_fraction > 0."
        raise ValueError(msg)
    return labels


def check_fit_arguments(
    n: int,
    *,
    max_epochs: int,
    validation_fraction: float,
    batch_size: int,
    early_stopping: bool,
    validation_groups=None,
) -> np.ndarray | None:
    """Raise on fit arguments that cannot work, before any training; return the checked ``validation_groups``."""
    if not isinstance(max_epochs, int | np.integer) or max_epochs < 1:
        msg = f"max_epochs must be a positive integer, got {max_epochs!r}."
        raise ValueError(msg)
    if not 0 <= validation_fraction < 1:
        msg = f"validation_fraction must be in [0, 1), got {validation_fraction!r}."
        raise ValueError(msg)
    if batch_size < 2:
        msg = f"batch_size must be at least 2, got {batch_size!r}."
        raise ValueError(msg)
    if early_stopping and validation_fraction == 0:
        msg = "early_stopping needs held-out cells; set validation_fraction > 0 or early_stopping=False."
        raise ValueError(msg)
    return None if validation_groups is None else check_groups(validation_groups, n, validation_fraction)
