"""How a model reads an AnnData: which matrix, which genes, which covariates, checked before any work."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

#: The smallest fraction of a model's genes that a query must have to be mapped (see :meth:`DataSetup.align_genes`).
MIN_GENE_OVERLAP = 0.5
#: The fewest cells a model can be trained on.
MIN_CELLS = 16
_CHUNK = 10_000
_CHUNK_VALUES = 2**24


def layer_names(adata: AnnData) -> list[str]:
    """Return the names in ``adata.layers``, without the ``None`` that anndata ≥ 0.13 lists there for ``adata.X``."""
    return [k for k in adata.layers if k is not None]


def _matrix(adata: AnnData, layer: str | None):
    if layer is None:
        X = adata.X
        if X is None:
            msg = "adata.X is empty; pass the layer that holds the counts with `layer=`."
            raise ValueError(msg)
        return X
    if layer not in adata.layers:
        msg = f"layer {layer!r} not found in adata.layers (available: {layer_names(adata)}); pass an existing layer or `layer=None` for adata.X."
        raise KeyError(msg)
    return adata.layers[layer]


def matrix_fingerprint(X) -> tuple[tuple[int, ...], float] | None:
    """Return an in-memory matrix's shape and the sum of its values (to notice an in-place change); ``None`` on disk.

    Explicit zeros do not count: dropping them (``X.eliminate_zeros()``) leaves the values as they were.
    """
    if sp.issparse(X):
        return X.shape, float(np.sum(X.data, dtype=np.float64))
    if isinstance(X, np.ndarray):
        return X.shape, float(np.sum(X, dtype=np.float64))
    return None


def cells_fingerprint(X, library: np.ndarray) -> list:
    """Return the matrix's shape, its cells' total count and their counts weighted by position, as JSON-ready values.

    Made from the library sizes the model reads anyway (also for backed data): other cells, other
    counts or the same cells in another order give another fingerprint.
    """
    library = np.asarray(library, dtype=np.float64).ravel()
    position = np.arange(1, library.size + 1, dtype=np.float64) / max(library.size, 1)
    return [list(X.shape), float(library.sum()), float(position @ library)]


class HoldsData:
    """The data a model was given, kept without a copy and checked, before each use, for changes made in place since."""

    setup: DataSetup

    @property
    def _data(self) -> tuple | None:
        """The data the model was given (matrix, library sizes, covariates), checked when it was read."""
        return self._held

    @_data.setter
    def _data(self, data: tuple | None) -> None:
        self._held = data
        # an in-memory matrix is the user's own (no copy is made): notice if it is changed in place later
        self._fingerprint = None if data is None else matrix_fingerprint(data[0])

    def _own_data(self) -> tuple:
        """Return :attr:`_data`, unless its matrix was changed in place since it was read."""
        if self._fingerprint is not None and matrix_fingerprint(self._data[0]) != self._fingerprint:
            msg = (
                f"the matrix this model read ({_where(self.setup.layer)}) has changed since, in place (e.g. by "
                "sc.pp.normalize_total or sc.pp.log1p: the model uses the matrix without copying it), so it no longer "
                "holds the values the model checked. Keep the raw counts in a layer before normalising and train a "
                f"new {type(self).__name__} on them, with `layer='counts'`."
            )
            raise ValueError(msg)
        return self._data


def _as_rows(X):
    """Return a matrix that can be sliced by rows, a batch at a time, without densifying it all.

    In-memory float32 CSR and float32 dense arrays are used as they are. Other sparse formats or
    dtypes are converted once, to a float32 CSR (the only copy of the data that is made). Backed
    CSR and backed dense data (``backed="r"``) stay on disk and are read batch by batch.
    """
    if sp.issparse(X):
        if X.format == "csr" and X.dtype == np.float32 and X.has_canonical_format:
            return X
        X = sp.csr_matrix(X, dtype=np.float32, copy=X.format == "csr" and not X.has_canonical_format)
        X.sum_duplicates()  # a copy already, never the user's matrix
        return X
    if getattr(X, "format", None) == "csr" and hasattr(X, "to_memory"):  # backed CSR
        return X
    if type(X).__module__.startswith("dask"):
        msg = (
            "adata.X is a dask array (e.g. from anndata's read_lazy): sclatent reads on-disk counts from a backed "
            "sparse matrix instead; open the store with `ad.read_h5ad(path, backed='r')`, or for zarr with "
            "`ad.AnnData(X=ad.io.sparse_dataset(zarr.open(path)['X']), obs=..., var=...)` (see the 'Scaling out' docs), "
            "or load it into memory with `adata.to_memory()` if it fits."
        )
        raise ValueError(msg)
    if getattr(X, "format", None) == "csc":  # backed CSC: every row read would read every column
        msg = (
            "the backed matrix is stored by genes (CSC): reading cells from it would read the whole file. "
            "Write the file with cells as rows (CSR), e.g. `adata = adata.to_memory(); adata.X = adata.X.tocsr(); "
            "adata.write_h5ad(path)` where it fits, or load it into memory with `adata.to_memory()`."
        )
        raise ValueError(msg)
    if hasattr(X, "to_memory"):  # other lazy arrays
        X = X.to_memory()
        return _as_rows(X) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    if type(X).__module__.startswith("h5py"):  # backed dense
        return X
    return np.asarray(X, dtype=np.float32)


def _row_chunks(X):
    for i in range(0, X.shape[0], _CHUNK):
        yield X[i : i + _CHUNK]


def _value_chunks(X):
    """Yield the values of ``X`` in chunks (a sparse matrix's stored values), so that checks need little memory."""
    if sp.issparse(X):
        for i in range(0, max(X.data.size, 1), _CHUNK_VALUES):
            yield X.data[i : i + _CHUNK_VALUES]
    else:
        for chunk in _row_chunks(X):
            yield chunk.data if sp.issparse(chunk) else np.asarray(chunk)


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"layer {layer!r}"


def check_dtype(X, *, layer: str | None) -> None:
    """Raise unless ``X`` holds real numbers."""
    dtype = np.dtype(X.dtype if hasattr(X, "dtype") else np.asarray(X).dtype)
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        msg = f"{_where(layer)} has dtype {dtype}; expected real numbers (counts, or log-normalised values with likelihood='gaussian'). Convert it, e.g. `adata.X = adata.X.astype(np.float32)`."
        raise TypeError(msg)


def check_values(X, *, layer: str | None, counts: bool) -> None:
    """Raise on NaN/inf, and on negative or non-integer values when counts are expected.

    Checked chunk by chunk (a sparse matrix on its stored values), so that no copy of the matrix is made.
    """
    check_dtype(X, layer=layer)
    for chunk in _value_chunks(X):
        if np.issubdtype(chunk.dtype, np.floating) and not np.isfinite(chunk).all():
            msg = f"{_where(layer)} holds NaN or infinite values; remove or fix them before training."
            raise ValueError(msg)
        if not counts:
            continue
        if (chunk < 0).any():
            msg = f"{_where(layer)} holds negative values; pass raw counts (e.g. `layer='counts'`) or use likelihood='gaussian' for log-normalised data."
            raise ValueError(msg)
        if np.issubdtype(chunk.dtype, np.floating) and (chunk != np.round(chunk)).any():
            msg = f"{_where(layer)} holds non-integer values; pass raw counts (e.g. `layer='counts'`) or use likelihood='gaussian' for log-normalised data."
            raise ValueError(msg)


def check_labels(adata: AnnData, label_key: str, *, name: str = "adata") -> pd.Series:
    """Return ``adata.obs[label_key]`` as strings, checked to exist and to label every cell (``name`` is how errors call ``adata``)."""
    if label_key not in adata.obs:
        msg = f"{name}.obs has no column {label_key!r} (columns: {list(adata.obs.columns)}); pass the column with the labels as `label_key`."
        raise KeyError(msg)
    labels = adata.obs[label_key]
    if labels.isna().any():
        msg = f"{int(labels.isna().sum())} {name} cells have no label in obs[{label_key!r}]; drop them first, e.g. `{name}[{name}.obs[{label_key!r}].notna()].copy()`."
        raise ValueError(msg)
    return labels.astype(str)


def _categorical(adata: AnnData, key: str) -> pd.Series:
    """Return the column, checked for missing values."""
    if key not in adata.obs:
        msg = f"adata.obs has no column {key!r}, which the model was trained with; add it to adata.obs first."
        raise KeyError(msg)
    col = adata.obs[key]
    if col.isna().any():
        msg = f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; fill or drop those cells first."
        raise ValueError(msg)
    return col


def _continuous(adata: AnnData, key: str) -> np.ndarray:
    """Return the column as float64, checked to be finite numbers."""
    if key not in adata.obs:
        msg = f"adata.obs has no column {key!r}, which the model was trained with; add it to adata.obs first."
        raise KeyError(msg)
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        msg = f"adata.obs[{key!r}] must hold finite numbers for a continuous covariate; found NaN, inf or text. Convert it with `pd.to_numeric` and fill or drop the cells without a value, or pass it as a categorical covariate."
        raise ValueError(msg)
    return values


def _row_sums(X) -> np.ndarray:
    if sp.issparse(X) or isinstance(X, np.ndarray):
        return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    return np.concatenate([np.asarray(c.sum(axis=1), dtype=np.float64).ravel() for c in _row_chunks(X)])


@dataclass
class DataSetup:
    """Where a model finds its data in an AnnData, and the category mappings it was trained with.

    Saved with the model, so that new data are read the same way.
    """

    var_names: list[str]
    counts: bool
    layer: str | None = None
    batch_key: str | None = None
    categorical_covariate_keys: list[str] = field(default_factory=list)
    continuous_covariate_keys: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    continuous_mean: list[float] = field(default_factory=list)
    continuous_std: list[float] = field(default_factory=list)

    @property
    def categorical_keys(self) -> list[str]:
        """The batch key (if any) followed by the categorical covariate keys."""
        return ([self.batch_key] if self.batch_key else []) + list(self.categorical_covariate_keys)

    @property
    def n_categories(self) -> list[int]:
        """Number of categories per categorical key."""
        return [len(self.categories[k]) for k in self.categorical_keys]

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy."""
        return asdict(self)

    @classmethod
    def from_adata(
        cls,
        adata: AnnData,
        *,
        counts: bool,
        layer: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
    ) -> DataSetup:
        """Check ``adata`` for training and record the genes and covariate categories."""
        cat_keys = list(categorical_covariate_keys or [])
        cont_keys = list(continuous_covariate_keys or [])
        _matrix(adata, layer)
        keys = ([batch_key] if batch_key else []) + cat_keys + cont_keys
        missing = [k for k in keys if k not in adata.obs]
        if missing:
            msg = f"key(s) {missing} not found in adata.obs (columns: {list(adata.obs.columns)}); pass existing columns or add them to adata.obs first."
            raise KeyError(msg)
        if len(set(keys)) != len(keys):
            msg = f"the same obs column appears twice among batch_key and the covariate keys: {keys}; pass each column once."
            raise ValueError(msg)
        categories = {}
        for key in ([batch_key] if batch_key else []) + cat_keys:
            col = _categorical(adata, key)
            cats = (
                col.cat.categories
                if isinstance(col.dtype, pd.CategoricalDtype)
                else pd.Index(col.unique()).sort_values()
            )
            used = pd.Index(cats)[pd.Index(cats).isin(col.unique())]
            categories[key] = [str(c) for c in used]
        mean, std = [], []
        for key in cont_keys:
            values = _continuous(adata, key)
            mean.append(float(values.mean()))
            std.append(float(values.std()) or 1.0)
        setup = cls(
            var_names=[str(v) for v in adata.var_names],
            counts=counts,
            layer=layer,
            batch_key=batch_key,
            categorical_covariate_keys=cat_keys,
            continuous_covariate_keys=cont_keys,
            categories=categories,
            continuous_mean=mean,
            continuous_std=std,
        )
        if adata.n_obs < MIN_CELLS:
            msg = f"adata has {adata.n_obs} cells; training needs at least {MIN_CELLS}. Pass more cells, e.g. less strictly filtered or several samples together."
            raise ValueError(msg)
        return setup

    def read(self, adata: AnnData) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
        """Check ``adata`` and return its matrix (genes in training order), library sizes and covariates.

        Raises before any work on missing genes, unseen categories, bad values or empty cells.
        """
        if adata.n_obs == 0:
            msg = "adata has no cells; pass an AnnData with cells (check the filtering or subsetting that emptied it)."
            raise ValueError(msg)
        if adata.n_vars == 0:
            msg = "adata has no genes; pass an AnnData with genes (check the gene filtering or subsetting that emptied it, e.g. `adata[:, mask]` or `sc.pp.filter_genes`)."
            raise ValueError(msg)
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
            msg = f"adata.var_names are not unique (e.g. {dup}); call `adata.var_names_make_unique()` first."
            raise ValueError(msg)
        X = _matrix(adata, self.layer)
        var_names = pd.Index(self.var_names)
        if not var_names.equals(adata.var_names):
            if (adata.isbacked and self.layer is None) or hasattr(X, "to_memory"):
                where = f"file {adata.filename}" if adata.isbacked else "store"
                msg = (
                    f"the genes of the backed {where} are not the model's, in the model's order; reordering "
                    "them would read the whole matrix into memory. Write a file with the model's genes in order "
                    "(`model.setup.var_names`), or load this one into memory with `adata.to_memory()` if it fits."
                )
                raise ValueError(msg)
            pos = adata.var_names.get_indexer(var_names)
            if (pos < 0).any():
                missing = var_names[pos < 0]
                msg = f"{len(missing)} of the model's {len(var_names)} genes are missing from adata.var_names (e.g. {missing[:5].tolist()}); use the gene names the model was trained with (`model.setup.var_names`), or train a model on the genes this data has."
                raise ValueError(msg)
            X = X[:, pos]
        check_dtype(X, layer=self.layer)
        X = _as_rows(X)
        check_values(X, layer=self.layer, counts=self.counts)
        library = _row_sums(X)
        if self.counts and (library == 0).any():
            n = int((library == 0).sum())
            msg = f"{n} cells have no counts in {_where(self.layer)} over the model's genes; remove them first: `sc.pp.filter_cells(adata, min_counts=1)` when adata has only those genes, else keep the cells with counts in them (`adata[:, model.setup.var_names]`)."
            raise ValueError(msg)
        cat = np.zeros((adata.n_obs, len(self.categorical_keys)), dtype=np.int64)
        for j, key in enumerate(self.categorical_keys):
            values = _categorical(adata, key).astype(str).to_numpy()
            codes = pd.Categorical(values, categories=self.categories[key]).codes
            if (codes < 0).any():
                unseen = sorted(set(values[codes < 0]))
                msg = f"adata.obs[{key!r}] has categories the model was not trained on: {unseen[:10]}; known categories: {self.categories[key][:10]}. Keep only cells of known categories, or train a model that includes these."
                raise ValueError(msg)
            cat[:, j] = codes
        cont = np.zeros((adata.n_obs, len(self.continuous_covariate_keys)), dtype=np.float32)
        for j, key in enumerate(self.continuous_covariate_keys):
            cont[:, j] = (_continuous(adata, key) - self.continuous_mean[j]) / self.continuous_std[j]
        return X, library, cat, cont

    def with_new_categories(self, adata: AnnData) -> tuple[DataSetup, dict[str, list[str]]]:
        """Return a copy that also knows the categories of ``adata``'s categorical columns that this setup has not seen.

        New categories are appended after the known ones, key by key (the order that
        :meth:`~sclatent.module.AutoencoderModule.with_categories` expects). Returns the new setup
        and the new categories of each key. Raises before any work on missing columns or values.
        """
        added: dict[str, list[str]] = {}
        for key in self.categorical_keys:
            values = pd.Index(_categorical(adata, key).astype(str).unique())
            added[key] = sorted(values[~values.isin(self.categories[key])].tolist())
        for key in self.continuous_covariate_keys:
            _continuous(adata, key)
        categories = {k: [*self.categories[k], *added[k]] for k in self.categorical_keys}
        return replace(self, categories=categories), added

    def align_genes(self, adata: AnnData, *, min_overlap: float = MIN_GENE_OVERLAP) -> tuple[AnnData, int]:
        """Return ``adata`` with exactly the setup's genes, in order, and how many of them it lacked.

        Genes are matched by name; genes the setup does not know are dropped; genes ``adata``
        lacks are filled with zeros (as architecture surgery does). Fewer than ``min_overlap`` of
        the setup's genes raises. ``adata`` itself is returned when it has every gene; otherwise a
        new AnnData with the matrix (in ``X`` or the setup's layer) and the covariate columns.
        """
        from anndata import AnnData

        if not 0 < min_overlap <= 1:
            msg = f"min_gene_overlap must be in (0, 1], got {min_overlap!r}; pass e.g. {MIN_GENE_OVERLAP}."
            raise ValueError(msg)
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
            msg = f"adata.var_names are not unique (e.g. {dup}); call `adata.var_names_make_unique()` first."
            raise ValueError(msg)
        genes = pd.Index(self.var_names)
        pos = adata.var_names.get_indexer(genes)
        n_missing = int((pos < 0).sum())
        if n_missing == 0:
            return adata, 0
        found = 1 - n_missing / len(genes)
        if found < min_overlap:
            msg = (
                f"the query has {len(genes) - n_missing} of the model's {len(genes)} genes ({found:.0%}), fewer than "
                f"min_gene_overlap={min_overlap:g}; check that the gene names use the same convention (symbols or "
                f"Ensembl IDs, the same species), or lower min_gene_overlap if the missing genes are truly not measured."
            )
            raise ValueError(msg)
        X = _matrix(adata, self.layer)
        check_dtype(X, layer=self.layer)
        present = pos[pos >= 0]
        # the present genes in the model's order, then zero columns moved to the missing genes' places
        sub = X[:, present]
        sub = sp.csc_matrix(sub.to_memory() if hasattr(sub, "to_memory") else sub, dtype=np.float32)
        filled = sp.hstack([sub, sp.csc_matrix((adata.n_obs, n_missing), dtype=np.float32)], format="csc")
        # column i of the result is model gene i: argsort maps each gene to its column in the stack
        stacked = np.concatenate([np.flatnonzero(pos >= 0), np.flatnonzero(pos < 0)])
        filled = filled[:, np.argsort(stacked, kind="stable")].tocsr()
        keys = [k for k in self.categorical_keys + self.continuous_covariate_keys if k in adata.obs]
        aligned = AnnData(obs=adata.obs[keys].copy(), var=pd.DataFrame(index=genes))
        if self.layer is None:
            aligned.X = filled
        else:
            aligned.layers[self.layer] = filled
        return aligned, n_missing
