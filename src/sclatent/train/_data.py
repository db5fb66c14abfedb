"""Minibatches built from a CSR (or dense) matrix a whole batch at a time, on the device that holds it."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

#: Cells per contiguous read from disk, and chunks shuffled together in memory (see :class:`DiskBatches`).
DISK_CHUNK_SIZE = 1024
DISK_WINDOW = 16
#: Cells of a backed matrix at most this many rows apart are read in one contiguous slice ...
_MAX_GAP = 256
#: ... of at most this many rows.
_MAX_SPAN = 16_384


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
        rows_np = self.read_rows(idx[order])[np.argsort(order)]
        rows_np = rows_np.toarray() if sp.issparse(rows_np) else np.asarray(rows_np)
        return torch.from_numpy(rows_np.astype(np.float32, copy=False))

    def read_rows(self, cells: np.ndarray):
        """Rows ``cells`` (sorted) of the matrix as a float32 CSR or dense array, read from disk for backed data.

        Cells that lie close together (a chunk of sorted training cells, or the held-out cells
        spread among them) are read as one contiguous slice and the rows not asked for are
        dropped: one read of some extra rows costs less than many small reads.
        """
        if self.in_tensors or len(cells) == 0:
            rows = self.X[cells]
        else:
            parts = []
            for run in _runs(cells):
                lo, hi = int(run[0]), int(run[-1]) + 1
                block = self._slice(lo, hi)
                parts.append(block if np.array_equal(run, np.arange(lo, hi)) else block[run - lo])
            rows = _stack(parts)
        if sp.issparse(rows):
            return sp.csr_matrix(rows, dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def _slice(self, lo: int, hi: int):
        """Rows ``lo:hi`` of backed data; a backed CSR is read straight from its three arrays.

        (anndata's own row slicing looks up package versions on every call, which costs more than
        reading a chunk.)
        """
        group = getattr(self.X, "group", None)
        if getattr(self.X, "format", None) != "csr" or group is None:
            return self.X[lo:hi]
        indptr = np.asarray(group["indptr"][lo : hi + 1], dtype=np.int64)
        start, stop = int(indptr[0]), int(indptr[-1])
        data, indices = group["data"][start:stop], group["indices"][start:stop]
        return sp.csr_matrix((data, indices, indptr - start), shape=(hi - lo, self.shape[1]))

    def per_cell(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the per-cell entries of a batch (all but ``"x"``) for cell indices ``rows``; ``"cells"`` are those indices."""
        batch = {
            "cells": rows,
            "library": self.library.index_select(0, rows),
            "cat": self.cat.index_select(0, rows),
            "cont": self.cont.index_select(0, rows),
        }
        if self.labels is not None:
            batch["y"] = self.labels.index_select(0, rows)
        return batch

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        rows = torch.from_numpy(idx).to(self.device, non_blocking=True)
        return {"x": self._rows(idx, rows), **self.per_cell(rows)}


def _runs(cells: np.ndarray):
    """Split sorted ``cells`` into runs, each read with one contiguous read.

    A run ends at a gap of more than ``_MAX_GAP`` rows, and spans at most ``_MAX_SPAN`` rows, so
    that a read never holds much more than the cells asked for plus ``_MAX_SPAN`` rows.
    """
    for run in np.split(cells, np.flatnonzero(np.diff(cells) > _MAX_GAP) + 1):
        while len(run):
            k = int(np.searchsorted(run, run[0] + _MAX_SPAN))
            yield run[:k]
            run = run[k:]


def _stack(blocks: list):
    return sp.vstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.concatenate(blocks)


def n_batches(n: int, batch_size: int) -> int:
    """Batches of :class:`DiskBatches` for ``n`` cells: full ones, plus the rest unless it is one cell (which joins the last)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


class DiskBatches(IterableDataset):
    """Minibatches of data on disk (``backed="r"``), out of core: memory does not grow with the cells.

    The cells (sorted) are cut into chunks of ``chunk_size`` consecutive ones, each read with one
    contiguous read. Every epoch the chunks come in a new random order; ``window`` chunks at a time
    are held in memory (sparse stays sparse), their cells shuffled together and cut into batches,
    while a background thread reads the next window (so up to three windows are in memory: the
    one being cut, one read ahead, one being read). So a batch draws its cells from up to
    ``window`` random places of the file, not from the whole file as in memory: how random the
    batches are is :attr:`randomness`. Every cell comes exactly once per epoch; a last batch of a
    single cell joins the batch before it (batch norm needs two cells).

    Without ``shuffle`` (validation, inference) the chunks come in file order and nothing is shuffled.

    Parameters
    ----------
    data
        The cells, with a backed matrix.
    indices
        The cells to go through (training or validation cells).
    batch_size
        Cells per batch.
    shuffle
        Shuffle chunks and cells, anew every epoch.
    seed
        Seed of the shuffling; epoch ``e`` uses ``[seed, e]``.
    chunk_size, window
        Cells per contiguous read, and chunks shuffled together in memory; by default
        ``DISK_CHUNK_SIZE`` (1,024) and ``DISK_WINDOW`` (16) of this module.
    rank, world_size
        Under distributed training, this process's rank and the number of processes. When
        shuffling, every epoch each rank takes every ``world_size``-th chunk of the same random
        chunk order, so that every rank's batches (and rank 0's batch-norm statistics, which DDP
        hands to all) draw from the whole file; the cells of the last few chunks, fewer than one
        per rank, are split evenly. Without shuffling each rank takes a contiguous share. Either
        way the ranks' cells are disjoint, cover every cell once per epoch, and every rank
        yields the same number of batches (a rank with one cell more puts it into its last batch).
    """

    def __init__(
        self,
        data: CellData,
        indices: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        chunk_size: int | None = None,
        window: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.chunk_size = int(chunk_size or DISK_CHUNK_SIZE)
        self.window = int(window or DISK_WINDOW) if shuffle else 1
        self.epoch = 0
        self.rank, self.world_size = int(rank), int(world_size)
        cells = np.sort(np.asarray(indices, dtype=np.int64))
        if self.world_size > 1 and shuffle:
            #: Full chunks shared round-robin anew every epoch (a multiple of world_size of them) ...
            self._n_shared = len(cells) // self.chunk_size // self.world_size * self.world_size
            #: ... and the cells after them, split evenly: this rank's part.
            tail = cells[self._n_shared * self.chunk_size :]
            self._tail = shard(tail, self.world_size)[self.rank]
            self.indices = cells  # which of them this rank takes changes every epoch
            per_rank = self._n_shared // self.world_size * self.chunk_size
            n_mine, min_share = per_rank + len(self._tail), per_rank + len(tail) // self.world_size
        else:
            shares = shard(cells, self.world_size)
            self.indices = shares[self.rank]
            n_mine, min_share = len(self.indices), min(len(s) for s in shares)
        #: Batches per epoch, the same on every rank.
        self.max_batches = n_batches(min_share, self.batch_size)
        self._n_batches = min(n_batches(n_mine, self.batch_size), self.max_batches)

    @property
    def randomness(self) -> str:
        """How random the batches are, in words."""
        if not self.shuffle:
            return "no shuffling: cells in file order"
        cells = min(self.chunk_size * self.window, len(self.indices))
        return (
            f"chunks of {self.chunk_size:,} consecutive cells read in a random order; {self.window} chunks "
            f"({cells:,} cells) shuffled together, so each batch draws from up to {self.window} random places "
            "of the file"
        )

    def __len__(self) -> int:
        return self._n_batches

    def _windows(self, pieces: list[np.ndarray]):
        """Yield (rows, cells) of each window of ``window`` pieces (sorted cells, each read as a whole)."""
        for w in range(0, len(pieces), self.window):
            chunks = pieces[w : w + self.window]
            yield _stack([self.data.read_rows(c) for c in chunks]), np.concatenate(chunks)

    def _pieces(self, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Return this epoch's chunks for this rank, in the order they are read."""
        cs = self.chunk_size
        if self.world_size == 1 or not self.shuffle:
            order = np.arange(-(-len(self.indices) // cs))
            if rng is not None:
                order = rng.permutation(order)
            return [self.indices[c * cs : (c + 1) * cs] for c in order]
        mine = rng.permutation(self._n_shared)[self.rank :: self.world_size]
        pieces = [self.indices[c * cs : (c + 1) * cs] for c in mine]
        if len(self._tail):
            pieces.insert(int(rng.integers(len(pieces) + 1)), self._tail)
        return pieces

    def __iter__(self):
        rng = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            self.epoch += 1
        windows = _Prefetch(self._windows(self._pieces(rng)))
        try:
            rest_rows = rest_cells = None
            pending, n_cut = None, 0
            for rows, cells in windows:
                if rng is not None:
                    perm = rng.permutation(len(cells))
                    rows, cells = rows[perm], cells[perm]
                if rest_cells is not None:
                    rows, cells = _stack([rest_rows, rows]), np.concatenate([rest_cells, cells])
                n_full = len(cells) // self.batch_size * self.batch_size
                for start in range(0, n_full, self.batch_size):
                    if pending is not None:
                        yield self._batch(*pending)
                    pending = rows[start : start + self.batch_size], cells[start : start + self.batch_size]
                    n_cut += 1
                rest_rows, rest_cells = rows[n_full:], cells[n_full:]
            one_too_many = rest_cells is not None and len(rest_cells) and n_cut + 1 > self.max_batches
            if rest_cells is not None and (len(rest_cells) == 1 or one_too_many) and pending is not None:
                pending = _stack([pending[0], rest_rows]), np.concatenate([pending[1], rest_cells])
                rest_cells = None
            if pending is not None:
                yield self._batch(*pending)
            if rest_cells is not None and len(rest_cells):
                yield self._batch(rest_rows, rest_cells)
        finally:
            windows.close()

    def _batch(self, rows, cells: np.ndarray) -> dict[str, torch.Tensor]:
        x = rows.toarray() if sp.issparse(rows) else rows
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), **self.data.per_cell(torch.from_numpy(cells))}


class _Prefetch:
    """Run an iterator in a background thread, one item ahead; errors come out where the items are taken."""

    _DONE = object()

    def __init__(self, items) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self._thread.start()

    def _run(self, items) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, self._DONE))
        except BaseException as err:  # handed to the consuming thread, which raises it
            self._put((False, err))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            ok, item = self._queue.get()
            if not ok:
                raise item
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:  # a generator may be finalised on the reader thread
            self._thread.join()


class BatchIndexSampler(Sampler):
    """Yield arrays of cell indices, one per minibatch, reshuffled every epoch from a seed.

    A last batch of a single cell is dropped when shuffling (batch norm needs two).

    Under distributed training (``world_size`` > 1) every rank draws the same permutation of the
    cells and takes every ``world_size``-th cell from position ``rank``, so the ranks' cells are
    disjoint and together cover every cell once per epoch; each rank cuts its cells into the same
    number of batches (at most ``batch_size`` cells each, one more on a rank with one more cell).
    Without shuffling (validation) each rank takes its contiguous share (sizes differ by at most one).
    """

    def __init__(
        self, indices: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        if self.world_size > 1:
            return max(-(-(len(self.indices) // self.world_size) // self.batch_size), 1)
        n, b = len(self.indices), self.batch_size
        full, rest = divmod(n, b)
        return full + (1 if rest > 1 or (rest == 1 and not self.shuffle) else 0)

    def __iter__(self):
        idx = self.indices
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(idx)
            self.epoch += 1
        if self.world_size > 1:
            mine = idx[self.rank :: self.world_size] if self.shuffle else shard(idx, self.world_size)[self.rank]
            for batch in np.array_split(mine, len(self)):
                yield np.sort(batch)
            return
        for i in range(len(self)):
            # sorted within the batch: contiguous reads, and what backed (h5py) data need
            yield np.sort(idx[i * self.batch_size : (i + 1) * self.batch_size])


def shard(indices: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Cut ``indices`` into ``world_size`` contiguous shares whose sizes differ by at most one."""
    return np.array_split(np.asarray(indices), max(int(world_size), 1))


def make_loader(
    data: CellData,
    indices: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Return a :class:`~torch.utils.data.DataLoader` over ``indices`` that fetches whole batches.

    Data in memory are sampled cell by cell; backed data are read chunk by chunk (:class:`DiskBatches`).

    ``pin_memory`` pins host batches for asynchronous copies to a GPU (when the data are not on it).
    ``rank`` and ``world_size``: under distributed training, this process's disjoint share of the
    cells, in as many batches as every other rank's.
    """
    if not data.in_tensors:  # backed data: out of core, chunk by chunk
        batches = DiskBatches(data, indices, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        return DataLoader(batches, batch_size=None, pin_memory=pin_memory)
    sampler = BatchIndexSampler(indices, batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
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


#: Lightning's ``precision`` values that training accepts: float32, or matrix products in bfloat16
#: (autocast) with float32 weights, likelihood and loss.
PRECISIONS = ("32-true", "bf16-mixed")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX), as torch detects it."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        detect = getattr(torch.cpu, probe, None)
        try:
            if detect is not None and detect():
                return True
        except (RuntimeError, AttributeError):  # a torch build without the probe's backend
            continue
    return False


def check_precision(precision: str) -> None:
    """Raise unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        msg = f"precision must be one of {list(PRECISIONS)}, got {precision!r}; pass '32-true' (float32) or 'bf16-mixed' (bfloat16 matrix products)."
        raise ValueError(msg)


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
