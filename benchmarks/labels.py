"""Where PBMC 3k's labels come from, and what that does to the bio conservation score.

PBMC 3k's cell types are the scanpy tutorial's annotation: Louvain clusters of a 10-neighbour
graph on 40 principal components of log-normalised counts (total counts and mitochondrial
fraction regressed out, each gene scaled), named by marker genes. An
embedding scored against clusters made on itself, or on a near copy of itself, may start ahead.
This benchmark measures how far. Three embeddings of the same 2,638 cells (the quality
benchmark's PCA baseline, a reconstruction of the tutorial's PCA, and sclatent with its
defaults) are scored by `sl.tl.compare_embeddings` against three label sets:

- the tutorial's annotation (the labels of the quality benchmark);
- Leiden clusters made the tutorial's way (10 neighbours, the lowest resolution that gives at
  least as many groups as the annotation) on the PCA baseline;
- the same on sclatent's latent.

sclatent is trained with seeds 0, 1 and 2 (its labels are made from each seed's own latent);
the tables give medians over the seeds.

Run:  python -m benchmarks --only labels  (writes docs/benchmarks/labels.md with its title and machine line;
``python -m benchmarks.labels --output FILE`` writes the tables alone)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import sclatent as sl
from benchmarks._data import quiet
from benchmarks.quality import DATASETS, load, pca, sclatent

SEEDS = [0, 1, 2]
DIFF = "sclatent minus PCA (quality baseline)"
EMBEDDINGS = {"X_pca": "PCA (quality baseline)", "X_tutorial": "PCA (tutorial recipe)", "X_sclatent": "sclatent"}


def tutorial_pca(adata: sc.AnnData, cells: pd.Index) -> np.ndarray:
    """The scanpy PBMC 3k tutorial's embedding of ``cells``: QC covariates regressed out, scaled, 40 of 50 PCs."""
    a = adata.copy()
    sc.pp.filter_cells(a, min_genes=200)
    sc.pp.filter_genes(a, min_cells=3)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    a = a[cells].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, min_mean=0.0125, max_mean=3, min_disp=0.5)
    a = a[:, a.var["highly_variable"]].copy()
    sc.pp.regress_out(a, ["total_counts", "pct_counts_mt"])
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=50, svd_solver="arpack")
    return a.obsm["X_pca"][:, :40]


def leiden_labels(adata: sc.AnnData, use_rep: str, n_groups: int) -> pd.Series:
    """Leiden clusters of a 10-neighbour graph at the lowest resolution giving at least ``n_groups``."""
    a = sc.AnnData(obs=adata.obs[[]].copy(), obsm={use_rep: adata.obsm[use_rep]})
    sc.pp.neighbors(a, use_rep=use_rep, n_neighbors=10, random_state=0)
    for resolution in np.arange(0.1, 3.0, 0.05):
        sc.tl.leiden(a, resolution=resolution, flavor="igraph", n_iterations=2, random_state=0)
        if a.obs["leiden"].nunique() >= n_groups:
            return a.obs["leiden"].astype("category")
    msg = f"no resolution up to 3 gives {n_groups} Leiden clusters on {use_rep}"
    raise RuntimeError(msg)


def run() -> tuple[pd.DataFrame, dict[str, list[int]]]:
    ds = DATASETS[0]  # PBMC 3k
    adata = load(ds.name)
    adata.obsm["X_tutorial"] = tutorial_pca(sl.datasets.pbmc3k(), adata.obs_names)
    pca(adata)
    n_groups = adata.obs[ds.label_key].nunique()
    adata.obs["leiden_pca"] = leiden_labels(adata, "X_pca", n_groups)
    groups = {
        "tutorial annotation": [n_groups],
        "Leiden on PCA (quality baseline)": [adata.obs["leiden_pca"].nunique()],
        "Leiden on sclatent": [],
    }
    rows = []
    for seed in SEEDS:
        sclatent(adata, ds, seed)
        adata.obs["leiden_sclatent"] = leiden_labels(adata, "X_sclatent", n_groups)
        groups["Leiden on sclatent"].append(adata.obs["leiden_sclatent"].nunique())
        for labels, key in (
            ("tutorial annotation", ds.label_key),
            ("Leiden on PCA (quality baseline)", "leiden_pca"),
            ("Leiden on sclatent", "leiden_sclatent"),
        ):
            df = sl.tl.compare_embeddings(adata, list(EMBEDDINGS), label_key=key, pca=False)
            df = df[df["category"].isin(["bio conservation", "aggregate"]) & (df["metric"] != "total")]
            rows.append(df.assign(labels=labels, seed=seed))
        print(f"seed {seed} done", flush=True)
    return pd.concat(rows, ignore_index=True), groups


def report(results: pd.DataFrame, groups: dict[str, list[int]]) -> list[str]:
    bio = results[results["metric"] == "bio conservation"]
    table = bio.pivot_table(index="labels", columns="embedding", values="value", aggfunc="median", sort=False)
    table = table[list(EMBEDDINGS)].rename(columns=EMBEDDINGS)
    table[DIFF] = table["sclatent"] - table["PCA (quality baseline)"]
    lines = [
        __doc__.split("\n\nRun:")[0].split("\n", 1)[1].strip(),
        "",
        "Groups per label set: "
        + "; ".join(f"{k} {', '.join(map(str, sorted(set(v))))}" for k, v in groups.items())
        + ".",
        "",
        "## Bio conservation against each label set",
        "",
        "| labels | " + " | ".join(table.columns) + " |",
        "|---|" + "---|" * len(table.columns),
    ]
    for labels, row in table.iterrows():
        lines.append(
            f"| {labels} | " + " | ".join(f"{v:+.3f}" if c == DIFF else f"{v:.3f}" for c, v in row.items()) + " |"
        )
    per_metric = results[results["embedding"].isin(["X_pca", "X_sclatent"])].pivot_table(
        index=["labels", "metric"], columns="embedding", values="value", aggfunc="median", sort=False
    )
    lines += [
        "",
        "## Each score, PCA baseline against sclatent",
        "",
        "| labels | metric | PCA (quality baseline) | sclatent |",
        "|---|---|---|---|",
    ]
    for (labels, metric), row in per_metric.iterrows():
        lines.append(f"| {labels} | {metric} | {row['X_pca']:.3f} | {row['X_sclatent']:.3f} |")
    home = table[DIFF]
    own, pca_made, annotation = (
        home["Leiden on sclatent"],
        home["Leiden on PCA (quality baseline)"],
        home["tutorial annotation"],
    )
    tutorial = table.loc["tutorial annotation", "PCA (tutorial recipe)"]
    lines += [
        "",
        "## Reading",
        "",
        f"sclatent minus the PCA baseline: {annotation:+.3f} against the tutorial's annotation, {pca_made:+.3f} "
        f"against clusters of the PCA baseline, {own:+.3f} against clusters of sclatent's own latent. The "
        f"reconstruction of the tutorial's PCA scores {tutorial:.3f} on the annotation.",
    ]
    if own > 0 > pca_made and annotation < 0 and tutorial >= table.loc["tutorial annotation"].drop(DIFF).max():
        lines += [
            "",
            f"The score favours the embedding the labels were made on: {own - pca_made:.3f} separate sclatent's "
            "lead and lag between the two Leiden label sets, and the annotation is closest to the tutorial's PCA. "
            "Against this annotation, bio conservation measures closeness to the tutorial's PCA as well as the "
            "biology. Labels that no embedding made (the CellBench cell lines' genotypes) cannot favour one "
            "embedding by construction.",
        ]
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="markdown file; the raw scores go next to it (.csv)")
    args = parser.parse_args(argv)
    quiet()
    out = args.output or Path("labels.md")
    results, groups = run()
    results.to_csv(out.with_suffix(".csv"), index=False)
    lines = report(results, groups)
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
