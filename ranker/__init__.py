"""The ranker layer: LambdaMART over the feature store, evaluation, importance, the CLI and the Scorer.

``from ranker import Scorer`` is the app-facing entry point (see :mod:`ranker.scorer`).
"""

from .documents import Document
from .scorer import Ranking, Result, Scorer

__all__ = ["Document", "Ranking", "Result", "Scorer"]
