"""The ranking model: what a model folder holds and how it scores a feature matrix, in one place.

A model folder is a plain LambdaMART (``kind = "fusion-ltr LambdaMART"``) or a cascade
(``kind = "fusion-ltr cascade"``, a ``stageN/`` LambdaMART folder per stage). :class:`RankingModel`
reads either as a list of :class:`Stage` (a plain model is a one-stage cascade) and owns every decision
about scoring with it:

- **membership**: stage k sees the ``keep`` best documents of stage k-1, per query (ties go to the
  earlier row, the better first-stage rank);
- **starting scores**: a stage after the first adds its model's score to the previous stage's (it was
  trained on top of it, LightGBM's ``init_score``);
- **the served order**: deeper stages first, then the stage's score (``depth + sigmoid(score)`` as one
  sortable number; a plain model serves its score as it is);
- **the first-stage guard**: what training decided on held-out training queries (``ranker.guard``):
  ``"model"``, ``"first stage"`` (the first-stage order) or ``"blend"`` (the reciprocal rank fusion of
  the two orders), applied to the served order;
- **the rerank depth**: a model that learned from clicks on the first stage's top ``depth`` documents only
  (``rerank_depth`` in the manifest) reorders those and keeps the rest below them, in the first stage's
  order (it never saw a document ranked deeper);
- **the unranked guard**: a model for apps' lists (``ranker.hide_ranks``) compared, on the same held-out
  training queries shuffled without ranks, with a content-only model (stage 1's features less the list
  ones): where it was not better, a list given without ranks is served by that model (``unranked/`` in
  the folder, :data:`CONTENT`), which has no first-stage order to fall back to;
- **calibration**: P(relevant) of a served score (``calibration.json``, :mod:`ranker.calibration`; the
  content-only model's own in ``unranked/``).

Everything that scores with a trained model calls it: the Scorer (which computes each stage's features
for the documents that reach it, through :meth:`RankingModel.run`), ``evaluate`` (with ``--model`` too),
calibration in ``train``, and ``report``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features import query_norm
from features.matrix import RankingData
from retrieval.errors import MissingInputError, UsageError

from .lambdamart import LambdaMART

log = logging.getLogger("fusion_ltr.model")

CASCADE = "fusion-ltr cascade"
# 2: each stage after the first boosts from the previous stage's score. A cascade of another format is
# refused (its stage scores combine differently); `run` retrains it (the format is in the train step's key).
FORMAT = 2
#: What the first-stage guard can serve (``ranker.guard`` -> the served order when the guard fires).
SERVES = {"fallback": "first stage", "blend": "blend", "warn": "model"}
#: What the unranked guard serves for a list without ranks when it fires (``ranker.guard`` "fallback" or
#: "blend"), and the model folder's subfolder that holds it.
CONTENT = "content model"
UNRANKED = "unranked"


@dataclass
class Stage:
    model: LambdaMART
    features: list[str]  # cumulative: every feature of this stage and the ones before
    keep: int  # documents passed on per query (0: the last stage)


@dataclass
class Scored:
    """A ranking model's output for some rows (one or several queries, each query's rows together)."""

    scores: np.ndarray  # the served order as scores (higher first): stage depth and the guard's policy applied
    stage_scores: np.ndarray  # each row's score at the deepest stage it reached
    depth: np.ndarray  # the (0-based) deepest stage each row reached
    masks: list[np.ndarray]  # per stage: the rows that reach it
    parts: list[RankingData]  # per stage: the matrix its model scored (the rows of its mask, in order)
    serves: str = "model"

    @property
    def shown(self) -> np.ndarray:
        """The score a result reports: its stage's score (below the rerank depth too: the model's opinion of
        the document), or the served one when the guard replaced the model's order."""
        return self.stage_scores if self.serves == "model" else self.scores


# ----------------------------------------------------------------------------------- helpers
def rows(data: RankingData, mask: np.ndarray, base: np.ndarray | None = None, names=None) -> RankingData:
    """The rows of ``data`` where ``mask`` holds (order kept); ``base``: their starting scores (one per
    row of ``data``; default: the data's own); ``names``: the columns to keep, a derived feature
    (:mod:`features.query_norm`) computed over these rows: the documents that reach the stage."""
    base = data.base if base is None else base
    part = RankingData.from_arrays(data.X[mask], data.y[mask], data.qids[mask], data.docnos[mask],
                                   data.feature_names, data.feature_versions, None if base is None else base[mask])
    return part if names is None else query_norm.add(part, names)


def keep_top(group, scores: np.ndarray, keep: int) -> np.ndarray:
    """Per query (``group``: rows per query, in order), the ``keep`` best rows by score; ties go to the
    earlier row (the better first-stage rank)."""
    mask = np.zeros(len(scores), dtype=bool)
    start = 0
    for g in np.asarray(group, dtype=int):
        order = np.argsort(-scores[start:start + g], kind="stable")[:keep]
        mask[start + order] = True
        start += g
    return mask


def narrow(reach: np.ndarray, group, scores: np.ndarray, keep: int) -> np.ndarray:
    """The rows that reach the next stage: of the rows in ``reach`` (scored by ``scores`` in their order,
    ``group`` their rows per query), the ``keep`` best per query."""
    idx = np.flatnonzero(reach)
    out = np.zeros_like(reach)
    out[idx[keep_top(group, scores, keep)]] = True
    return out


def final_scores(depth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """One sortable number per document: deeper stages first, then the stage's score."""
    return depth + 1.0 / (1.0 + np.exp(-np.clip(score, -50, 50)))


def first_stage_scores(data: RankingData) -> np.ndarray:
    """The first-stage order as scores: minus ``fs_rank`` when present, else minus the row's position in
    its query (store data keeps each query's rows in first-stage rank order)."""
    if "fs_rank" in data.feature_names:
        return -data.X[:, data.feature_names.index("fs_rank")]
    starts = np.repeat(np.cumsum(np.r_[0, data.group[:-1]]), data.group)
    return -(np.arange(len(data.y)) - starts).astype(float)


def blended(model: np.ndarray, first: np.ndarray, group, k: int = 60) -> np.ndarray:
    """Per query, the reciprocal rank fusion of the model's order and the first stage's:
    ``1 / (k + rank_model) + 1 / (k + rank_first)`` (``group``: rows per query, in order)."""

    def ranks(scores: np.ndarray) -> np.ndarray:
        out = np.empty(len(scores))
        out[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        return out

    fused = np.empty(len(model))
    start = 0
    for g in np.asarray(group, dtype=int):
        part = slice(start, start + g)
        fused[part] = 1.0 / (k + ranks(model[part])) + 1.0 / (k + ranks(first[part]))
        start += g
    return fused


#: A served score above every first-stage score (minus a rank): the documents within the rerank depth.
ABOVE = 1e6


def within_depth(scores: np.ndarray, first: np.ndarray, depth: int) -> np.ndarray:
    """The rerank depth's served order: rows among the first stage's top ``depth`` (``first``: minus the
    first-stage rank) by ``scores``, above the others, which keep the first stage's order."""
    first = np.asarray(first, dtype=np.float64)
    return np.where(-first <= depth, ABOVE + scores, first)


def serve(serves: str, scores: np.ndarray, first: np.ndarray, group) -> np.ndarray:
    """The first-stage guard's policy on a model's scores (``serves``: "model", "first stage", "blend")."""
    if serves == "first stage":
        return np.asarray(first, dtype=np.float64)
    if serves == "blend":
        return blended(scores, np.asarray(first, dtype=np.float64), group)
    return scores


# ----------------------------------------------------------------------------------- the model
@dataclass
class RankingModel:
    """Stages, the first-stage guard's decision and the calibrator of one trained model (see the module
    docstring). ``cascade``: the folder is a cascade (its served order is by stage depth first), even of
    one stage."""

    stages: list[Stage]
    serves: str = "model"
    calibrator: object | None = None  # a ranker.calibration.Calibrator
    manifest: dict = field(default_factory=dict)
    cascade: bool = False
    path: Path | None = None
    depth: int = 0  # the rerank depth (0: every row); see the module docstring
    # the unranked guard's content-only model (see the module docstring): served for a list without ranks
    unranked_stage: Stage | None = None
    unranked_calibrator: object | None = None

    def __post_init__(self):
        if self.serves not in SERVES.values():
            raise UsageError(f"{self.path or 'model'}: guard.serves must be one of {sorted(SERVES.values())}, "
                             f"found {self.serves!r}")

    @classmethod
    def plain(cls, model: LambdaMART, *, guard: dict | None = None, calibrator=None, depth: int = 0) -> "RankingModel":
        """A fitted LambdaMART as a one-stage model (``guard``: the first-stage guard's decision; ``depth``:
        the rerank depth)."""
        return cls([Stage(model, list(model.feature_names_), 0)], serves=(guard or {}).get("serves", "model"),
                   calibrator=calibrator, manifest=getattr(model, "manifest_", None) or {}, depth=depth)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "RankingModel":
        """The model folder ``path`` (a plain LambdaMART's or a cascade's), its files checked against their
        checksums first (``verify``) and its calibrator, when it was trained with one."""
        from .calibration import Calibrator
        from .integrity import verify as verify_files

        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.exists():
            raise MissingInputError(f"{path}: no trained model (expected manifest.json); "
                                    "run `fusion-ltr run --config ...` or `fusion-ltr train` first")
        manifest = read_json(manifest_file)
        if verify:
            verify_files(path, manifest)  # every file against its sha256, before a native library reads one
        if manifest.get("kind") == CASCADE:
            if manifest.get("format") != FORMAT:
                raise UsageError(f"{path}: a cascade of format {manifest.get('format', 1)}, this version reads "
                                 f"format {FORMAT} (later stages boost from the earlier stage's score); retrain it "
                                 "with `fusion-ltr train --config ...`")
            stages = [Stage(LambdaMART.load(path / s["folder"]), s["features"], s["keep"]) for s in manifest["stages"]]
        else:
            booster = LambdaMART.load(path)
            manifest = booster.manifest_
            stages = [Stage(booster, list(booster.feature_names_), 0)]
        calibrator = Calibrator.load(path, required=bool(manifest.get("calibrated")))
        serves = (manifest.get("guard") or {}).get("serves", "model")
        unranked_stage = unranked_calibrator = None
        if (manifest.get("unranked_guard") or {}).get("serves") == CONTENT:
            if not (path / UNRANKED / "manifest.json").exists():
                raise MissingInputError(f"{path}: the manifest's unranked_guard serves the content model, but "
                                        f"{path / UNRANKED} holds none; retrain it with `fusion-ltr train --config ...`")
            content = LambdaMART.load(path / UNRANKED)
            unranked_stage = Stage(content, list(content.feature_names_), 0)
            unranked_calibrator = Calibrator.load(path / UNRANKED, required=f"{UNRANKED}/calibration.json"
                                                  in (manifest.get("files") or {}))
        return cls(stages, serves=serves, calibrator=calibrator, manifest=manifest,
                   cascade=manifest.get("kind") == CASCADE, path=path, depth=int(manifest.get("rerank_depth") or 0),
                   unranked_stage=unranked_stage, unranked_calibrator=unranked_calibrator)

    # ------------------------------------------------------------------------------- what it uses
    @property
    def feature_names(self) -> list[str]:
        """Every feature the model uses, in the last stage's order."""
        return list(self.stages[-1].features)

    @property
    def last(self) -> LambdaMART:
        """The model that sees every feature (the last stage's)."""
        return self.stages[-1].model

    @property
    def kind(self) -> str:
        return "cascade" if self.cascade else "lambdamart"

    # ------------------------------------------------------------------------------- scoring
    def run(self, stage_data: Callable[[int, np.ndarray, np.ndarray | None], RankingData], n: int,
            first_stage: np.ndarray | None) -> Scored:
        """Score ``n`` rows stage by stage. ``stage_data(k, mask, base)`` gives stage k's matrix of the
        rows in ``mask`` (their order kept; ``base``, one per row of the mask, the score they start from,
        None for the first stage): a caller that computes features lazily computes them here, for those
        rows only. ``first_stage``: each row's first-stage order as a score, for the guard's policy; None
        for rows that come in no first-stage order (a list given without ranks): the model then serves, or
        the unranked guard's content-only model where it chose that one."""
        reach = np.ones(n, dtype=bool)
        if first_stage is None and self.unranked_stage is not None:  # the unranked guard fired
            part = stage_data(0, reach, None).select(self.unranked_stage.features)
            s = self.unranked_stage.model.predict(part)
            return Scored(s, s, np.zeros(n, dtype=int), [reach], [part], CONTENT)
        depth, score = np.zeros(n), np.full(n, np.nan)
        masks, parts = [], []
        for k, stage in enumerate(self.stages):
            masks.append(reach.copy())
            part = stage_data(k, reach, score[reach] if k else None)
            s = stage.model.predict(part)
            parts.append(part)
            depth[reach], score[reach] = k, s
            if stage.keep and k < len(self.stages) - 1:
                reach = narrow(reach, part.group, s, stage.keep)
        key = final_scores(depth, score) if self.cascade else score.copy()
        if self.depth and first_stage is not None:
            key = within_depth(key, first_stage, self.depth)
        serves = self.serves if first_stage is not None else "model"
        served = serve(serves, key, first_stage, parts[0].group)
        return Scored(served, score, depth.astype(int), masks, parts, serves)

    def score(self, data: RankingData, first_stage: np.ndarray | None = None, *, ordered: bool = True) -> Scored:
        """Score ``data``, a matrix of every feature the model uses (a derived one computed per stage over
        the documents that reach it); ``first_stage``: default from ``data`` (:func:`first_stage_scores`);
        ``ordered = False``: the rows come in no first-stage order (a list given without ranks)."""
        first = None if not ordered else first_stage_scores(data) if first_stage is None else first_stage

        def stage_data(k, mask, base):
            full = None if base is None else np.full(len(data.y), np.nan)
            if full is not None:
                full[mask] = base
            return rows(data, mask, full, self.stages[k].features)

        return self.run(stage_data, len(data.y), first)

    def predict(self, data: RankingData, first_stage: np.ndarray | None = None, *, ordered: bool = True) -> np.ndarray:
        """The served order of ``data``'s rows as scores (higher first), as the Scorer serves it."""
        return self.score(data, first_stage, ordered=ordered).scores

    def unranked(self, data: RankingData, list_features, *, seed: int = 0) -> RankingData:
        """``data``'s rows as an app's list sent in a seeded random order without ranks or scores
        (:func:`without_ranks`): a model trained with ``ranker.hide_ranks`` (:attr:`hides_ranks`) has its
        list features hidden and no first-stage order (it serves its own); another takes the positions."""
        return without_ranks(data, list_features, hides=self.hides_ranks, seed=seed)

    @property
    def hides_ranks(self) -> bool:
        """Trained with ``ranker.hide_ranks``: a list without ranks is served with its list features hidden."""
        return bool(self.manifest.get("hidden_when_unranked"))

    def probability(self, scores: np.ndarray, serves: str = "model") -> np.ndarray | None:
        """P(relevant) of served scores (:meth:`predict`; ``serves``: :attr:`Scored.serves`, whose calibrator
        applies), or None for a model trained without a calibrator."""
        calibrator = self.unranked_calibrator if serves == CONTENT else self.calibrator
        return calibrator.predict(scores) if calibrator is not None else None

    def stage_extractors(self, extractors: list) -> list[list]:
        """Per stage, the extractors that run there: where the first of their features enters."""
        names = [stage.features for stage in self.stages]
        return [[e for e in extractors if entry_stage([s.name for s in e.specs], names) == k]
                for k in range(len(self.stages))]


def without_ranks(data: RankingData, list_features, *, hides: bool, seed: int = 0) -> RankingData:
    """``data`` as the Scorer sees a list given in a random order without ranks or scores: each query's rows
    in a seeded random order (so no tie falls back on the first-stage order), the list features hidden (NaN)
    for a model that learned to do without them (``hides``); else ``fs_rank`` is the document's position in
    that order and every other list feature is NaN."""
    names = [n for n in list_features if n in data.feature_names]
    rng = np.random.default_rng(seed)
    group = np.asarray(data.group, dtype=int)
    starts = np.cumsum(np.r_[0, group[:-1]]).astype(int)
    order = np.concatenate([s + rng.permutation(g) for s, g in zip(starts, group)]) if len(group) else np.arange(0)
    positional = not hides and "fs_rank" in names
    X = data.masked([n for n in names if not (positional and n == "fs_rank")]).X[order]
    if positional:
        X[:, data.feature_names.index("fs_rank")] = np.concatenate([np.arange(1, g + 1) for g in group])
    return RankingData(X, data.y[order], data.group, data.qids[order], data.docnos[order], list(data.feature_names),
                       data.feature_versions, None if data.base is None else data.base[order])


def entry_stage(features, stage_features) -> int:
    """The (0-based) stage an extractor runs in: the first stage naming one of its ``features`` (or a
    feature derived from one); 0 when any of them is in no stage (it is built with the cheap ones)."""
    stage_features = [query_norm.raw_names(names) for names in stage_features]
    stages = [next((k for k, names in enumerate(stage_features) if f in names), None) for f in features]
    return 0 if not stages or None in stages else min(stages)


def read_json(path: Path) -> dict:
    """A model folder's JSON object, or an error naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); restore the model folder or retrain it") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
