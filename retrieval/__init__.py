"""First-stage retrieval: datasets, BM25, dense bi-encoder, reciprocal rank fusion.

The lowest layer of fusion-ltr; it imports nothing from ``features`` or ``ranker``.
"""

from .base import Retriever
from .bm25 import BM25Params, BM25Retriever
from .data import Dataset, find_dataset, load_beir, load_letor_fold, load_svmlight, read_trec_run, write_trec_run
from .dense import DenseParams, DenseRetriever
from .errors import FusionLTRError
from .first_stage import FirstStage, FirstStageConfig
from .fusion import rrf

__all__ = [
    "BM25Params", "BM25Retriever", "Dataset", "DenseParams", "DenseRetriever", "FirstStage", "FirstStageConfig",
    "FusionLTRError", "Retriever",
    "find_dataset", "load_beir", "load_letor_fold", "load_svmlight", "read_trec_run", "rrf", "write_trec_run",
]
