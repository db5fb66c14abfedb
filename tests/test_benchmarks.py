"""The benchmarks' data and tables: resampled cells keep the source's look; ties are not shown as wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from benchmarks._data import load_pbmc
from benchmarks.quality import DATASETS, report
from benchmarks.scale import resample

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "quality.csv"


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


def _table(lines: list[str], dataset: str) -> dict[str, dict[str, str]]:
    """The cells of one data set's table, by metric and method."""
    start = lines.index(f"## {dataset}")
    header = next(line for line in lines[start:] if line.startswith("| category"))
    methods = [c.strip() for c in header.strip("|").split("|")][2:]
    rows = {}
    for line in lines[lines.index(header, start) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = dict(zip(methods, cells[2:], strict=True))
    return rows


def test_quality_tables_bold_winners_not_ties():
    results = pd.read_csv(RESULTS)  # the published quality benchmark
    lines = report(results, {ds.name: (0, 0) for ds in DATASETS}, "quality.png")
    three = _table(lines, "CellBench 3 lines × 2 technologies")
    # scVI, PCA and Harmony all reach 1.000: all three share the best, sclatent (0.898) does not
    assert three["Leiden NMI"] == {"sclatent": "0.898", "scVI": "**1.000**", "PCA": "**1.000**", "Harmony": "**1.000**"}
    five = _table(lines, "CellBench 5 lines × 3 plates")
    # every method at 1.000: nobody won
    assert five["Leiden NMI"] == dict.fromkeys(["sclatent", "scVI", "PCA", "Harmony"], "1.000")
    pbmc = _table(lines, "PBMC 3k")
    assert pbmc["silhouette label"] == {"sclatent": "**0.571**", "scVI": "0.551", "PCA": "0.567"}
    assert pbmc["fit seconds"]["PCA"] == "**0.4**"  # time: lower is better
    for ds in DATASETS:
        for metric, cells in _table(lines, ds.name).items():
            bold = {v.strip("*") for v in cells.values() if v.startswith("**")}
            assert len(bold) <= 1, (ds.name, metric, cells)
