"""Plotting. scanpy's :mod:`scanpy.pl` also works on everything sclatent writes."""

from ._attribute import attribute
from ._classify import classify
from ._compare import compare_embeddings
from ._gene_trends import gene_trends
from ._history import history
from ._latent_path import latent_path
from ._tune import tune

__all__ = ["attribute", "classify", "compare_embeddings", "gene_trends", "history", "latent_path", "tune"]
