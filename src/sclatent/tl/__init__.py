"""Tools: models trained on, and analyses run on, an AnnData."""

from ._attribute import attribute
from ._autoencode import autoencode
from ._classify import classify
from ._compare import compare_embeddings
from ._denoise import denoise
from ._gene_trends import gene_trends
from ._latent_path import latent_path
from ._leiden import leiden
from ._map_query import map_query
from ._pseudotime import paga, pseudotime, root_cell
from ._transfer import transfer_labels
from ._tune import tune
from ._umap import umap

__all__ = [
    "attribute",
    "autoencode",
    "classify",
    "compare_embeddings",
    "denoise",
    "gene_trends",
    "latent_path",
    "leiden",
    "map_query",
    "paga",
    "pseudotime",
    "root_cell",
    "transfer_labels",
    "tune",
    "umap",
]
