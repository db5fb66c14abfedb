"""Latent-space quality on every bundled real data set: sclatent, scVI, PCA and Harmony, scored with scib-metrics.

Each method runs with its defaults: ``sl.tl.autoencode`` and ``SCVI(...).train()`` (both given
the batch and covariate columns), PCA (50 components of log-normalised highly variable genes,
the scanpy recipe) and Harmony on that PCA (harmonypy) where there are batches. Every
embedding is scored by :func:`sclatent.tl.compare_embeddings`.

Run:  python -m benchmarks --only quality  (writes docs/benchmarks/quality.md with its title and machine line;
``python -m benchmarks.quality --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import sclatent as sl
from benchmarks._data import hvg_counts, quiet
from sclatent.tl._compare import _pca_baseline

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


@dataclass
class Dataset:
    """A bundled data set and how each method is told about its batches and covariates."""

    name: str
    label_key: str
    batch_key: str | None = None  # the batch the metrics score mixing of
    model_batch: str | None = None  # given to the models as their batch
    covariates: list[str] = field(default_factory=list)  # further categorical covariates


def load(name: str) -> ad.AnnData:
    """Raw counts of the 2,000 most variable genes (all genes when there are fewer), annotated cells only."""
    if name == "PBMC 3k":
        adata = sl.datasets.pbmc3k()
        adata = adata[adata.obs["cell_type"].notna()].copy()
    elif name == "paul15":
        adata = sl.datasets.paul15()
    elif name == "CellBench 3 lines × 2 technologies":
        adata = ad.read_h5ad(DATA / "cellbench_3cl_technologies.h5ad")
        adata = adata[adata.obs["demuxlet_cls"] == "SNG"].copy()
    elif name == "CellBench 5 lines × 3 plates":
        adata = ad.read_h5ad(DATA / "cellbench_5cl_plates_singlets.h5ad")
    elif name == "Kang 2018 stimulated PBMCs":
        adata = ad.read_h5ad(DATA / "kang2018_stim_subset.h5ad")
    else:
        msg = f"unknown data set {name!r}; choose one of {[d.name for d in DATASETS]}."
        raise ValueError(msg)
    return hvg_counts(adata, batch_key="batch" if "batch" in adata.obs else None)


DATASETS = [
    Dataset("PBMC 3k", "cell_type"),
    Dataset("paul15", "paul15_clusters"),
    Dataset("CellBench 3 lines × 2 technologies", "cell_line_demuxlet", "batch", "batch"),
    Dataset("CellBench 5 lines × 3 plates", "cell_line_demuxlet", "batch", "batch"),
    # donors are the batch; stimulation is a covariate the models are told about; mixing is scored over samples
    Dataset("Kang 2018 stimulated PBMCs", "cluster_id", "sample_id", "patient_id", ["group_id"]),
]


def pca(adata: ad.AnnData) -> float:
    """``obsm['X_pca']``: compare_embeddings' PCA baseline, 50 components of log-normalised counts. Returns seconds."""
    start = time.perf_counter()
    _pca_baseline(adata, layer=None, n_comps=50, random_state=0)
    return time.perf_counter() - start


def harmony(adata: ad.AnnData, keys: list[str]) -> float:
    """``obsm['X_harmony']``: Harmony on ``X_pca`` over the ``keys`` columns. Returns seconds."""
    import harmonypy

    start = time.perf_counter()
    out = harmonypy.run_harmony(adata.obsm["X_pca"], adata.obs, keys, random_state=0, verbose=False)
    z = np.asarray(out.Z_corr)
    adata.obsm["X_harmony"] = z if z.shape[0] == adata.n_obs else z.T  # orientation differs between versions
    return time.perf_counter() - start


def sclatent(adata: ad.AnnData, ds: Dataset, seed: int = 0, key: str = "sclatent", **kwargs) -> float:
    """``obsm[f'X_{key}']``: ``sl.tl.autoencode`` with its defaults (``kwargs`` override them). Returns seconds."""
    start = time.perf_counter()
    sl.tl.autoencode(
        adata,
        batch_key=ds.model_batch,
        categorical_covariate_keys=ds.covariates or None,
        random_state=seed,
        key_added=key,
        progress_bar=False,
        denoise=False,
        **kwargs,
    )
    return time.perf_counter() - start


def scvi_fit(adata: ad.AnnData, ds: Dataset, seed: int = 0) -> float:
    """``obsm['X_scVI']``: scvi-tools' ``SCVI`` with its defaults. Returns seconds."""
    import scvi

    scvi.settings.seed = seed
    a = adata.copy()
    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(a, batch_key=ds.model_batch, categorical_covariate_keys=ds.covariates or None)
    model = scvi.model.SCVI(a)
    model.train(enable_progress_bar=False)
    adata.obsm["X_scVI"] = model.get_latent_representation()
    return time.perf_counter() - start


def score(adata: ad.AnnData, ds: Dataset, times: dict[str, float], *, pca: bool) -> pd.DataFrame:
    """``compare_embeddings`` on the embeddings in ``times`` (plus PCA when ``pca``), with their fit seconds as rows."""
    keys = [k for k in times if k != "X_pca"]
    df = sl.tl.compare_embeddings(adata, keys, label_key=ds.label_key, batch_key=ds.batch_key, pca=pca)
    time_rows = pd.DataFrame(
        {"embedding": list(times), "category": "time", "metric": "fit seconds", "value": list(times.values())}
    )
    return pd.concat([df, time_rows], ignore_index=True)


def run_dataset(ds: Dataset, seeds: list[int], methods: list[str]) -> pd.DataFrame:
    """Every method on one data set, the seeded ones (sclatent, scVI) once per seed; PCA and Harmony once."""
    adata = load(ds.name)
    print(f"{ds.name}: {adata.n_obs} cells × {adata.n_vars} genes", flush=True)
    parts = []
    times = {"X_pca": pca(adata)}
    if "Harmony" in methods and ds.batch_key is not None:
        times["X_harmony"] = harmony(adata, [ds.model_batch, *ds.covariates])
    for seed in seeds:
        if "sclatent" in methods:
            times["X_sclatent"] = sclatent(adata, ds, seed)
        if "scVI" in methods:
            times["X_scVI"] = scvi_fit(adata, ds, seed)
        print(f"    seed {seed}, fit seconds:", {k: round(v, 1) for k, v in times.items()}, flush=True)
        if "PCA" not in methods and "X_pca" in times:
            del times["X_pca"]
        part = score(adata, ds, times, pca="X_pca" in times)
        part["seed"] = seed
        parts.append(part)
        times = {}  # PCA and Harmony do not depend on the seed: scored with the first one only
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "dataset", ds.name)
    out.attrs["shape"] = adata.shape
    return out


NAMES = {"X_sclatent": "sclatent", "X_scVI": "scVI", "X_pca": "PCA", "X_harmony": "Harmony"}
METHODS = ["sclatent", "scVI", "PCA", "Harmony"]


def bold_best(row: pd.Series, fmt: str, *, lower_is_better: bool = False) -> list[str]:
    """Format each method's value, in bold where it is the best as shown.

    Methods that tie for the best (equal once formatted) are all bold; when every method ties, none is, as nobody won.
    """
    shown = {m: fmt.format(v) for m, v in row.items()}
    scored = row.dropna()
    if scored.empty:
        return list(shown.values())
    best = fmt.format(scored.min() if lower_is_better else scored.max())
    winners = {m for m in scored.index if shown[m] == best}
    if len(winners) == len(scored):
        winners = set()
    return [f"**{shown[m]}**" if m in winners else shown[m] for m in row.index]


def report(results: pd.DataFrame, shapes: dict[str, tuple[int, int]], figure: str) -> list[str]:
    results = results.assign(method=results["embedding"].map(NAMES))
    lines = []
    for ds in DATASETS:
        r = results[results["dataset"] == ds.name]
        if r.empty:
            continue
        table = r.pivot_table(
            index=["category", "metric"], columns="method", values="value", sort=False, aggfunc="median"
        )
        table = table[[m for m in METHODS if m in table.columns]]
        n_obs, n_vars = shapes[ds.name]
        how = f"batch for the metrics: `{ds.batch_key}`" if ds.batch_key else "no batches (bio conservation only)"
        given = f"; models given batch `{ds.model_batch}`" if ds.model_batch else ""
        given += f" and covariates {ds.covariates}" if ds.covariates else ""
        lines += [
            f"## {ds.name}",
            "",
            f"{n_obs:,} cells × {n_vars:,} genes, labels `{ds.label_key}`, {how}{given}.",
            "",
            "| category | metric | " + " | ".join(table.columns) + " |",
            "|---|---|" + "---|" * len(table.columns),
        ]
        for (category, metric), row in table.iterrows():
            fmt = "{:.1f}" if category == "time" else "{:.3f}"
            cells = bold_best(row, fmt, lower_is_better=category == "time")
            lines.append(f"| {category} | {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    totals = results[results["metric"].isin(["total", "bio conservation"]) & (results["category"] == "aggregate")]
    summary = totals.pivot_table(
        index=["dataset", "metric"], columns="method", values="value", sort=False, aggfunc="median"
    )
    summary = summary[[m for m in METHODS if m in summary.columns]]
    lines += [
        "## Summary",
        "",
        "| data set | score | " + " | ".join(summary.columns) + " | sclatent minus scVI |",
        "|---|---|" + "---|" * (len(summary.columns) + 1),
    ]
    for (dataset, metric), row in summary.iterrows():
        cells = ["" if np.isnan(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {dataset} | {metric} | " + " | ".join(cells) + f" | {row['sclatent'] - row['scVI']:+.3f} |")
    lines += ["", f"![aggregate scores per data set and method]({figure})", ""]
    return lines


def plot(results: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    totals = results[(results["category"] == "aggregate") & (results["metric"] == "total")]
    totals = totals.assign(method=totals["embedding"].map(NAMES))
    table = totals.pivot_table(index="dataset", columns="method", values="value", sort=False, aggfunc="median")
    table = table[[m for m in METHODS if m in table.columns]]
    ax = table.plot.bar(figsize=(9, 4), width=0.8, rot=15)
    ax.set_ylabel("aggregate score (0.6 bio + 0.4 batch;\nbio alone without batches)")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="markdown file; the plot goes next to it")
    parser.add_argument("--datasets", nargs="+", default=[d.name for d in DATASETS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of sclatent and scVI")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=METHODS,
        help="methods to run; with --output, the other methods' rows are kept from its .csv",
    )
    args = parser.parse_args(argv)
    quiet("scvi", "harmonypy")
    parts, shapes = [], {}
    for ds in DATASETS:
        if ds.name in args.datasets:
            part = run_dataset(ds, args.seeds, args.methods)
            shapes[ds.name] = part.attrs["shape"]
            parts.append(part)
    results = pd.concat(parts, ignore_index=True)
    kept = args.output.with_suffix(".csv") if args.output else None
    if set(args.methods) != set(METHODS) and kept is not None and kept.exists():
        old = pd.read_csv(kept)
        run = {k for k, v in NAMES.items() if v in args.methods}
        old = old[~old["embedding"].isin(run) & old["dataset"].isin(args.datasets)]
        print(f"kept {len(old)} rows of {sorted(set(old['embedding']))} from {kept}", flush=True)
        results = pd.concat([old, results], ignore_index=True)
        kept_note = (
            f"This run trained {', '.join(args.methods)}; the rows of "
            f"{', '.join(sorted(NAMES[e] for e in set(old['embedding'])))} are kept from the previous run "
            "(`--methods`), on the same machine; the minutes in the header are this run's."
        )
    else:
        kept_note = ""
    figure = "quality.png"
    seeds = ", ".join(str(x) for x in sorted(results["seed"].dropna().unique().astype(int)))
    lines = [
        f"Each seeded method (sclatent, scVI) ran with seeds {seeds}; every number is the median over them. "
        "PCA and Harmony do not depend on the seed and ran once." + (f" {kept_note}" if kept_note else ""),
        "",
        *report(results, shapes, figure),
    ]
    print("\n".join(lines))
    if args.output:
        plot(results, args.output.parent / figure)
        results.to_csv(args.output.with_suffix(".csv"), index=False)
        args.output.write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
