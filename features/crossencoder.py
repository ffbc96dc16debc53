"""Cross-encoder relevance score: a sentence-transformers CrossEncoder or any HF sequence classifier.

Pairs are sorted by length before batching (dynamic padding wastes little), scored on CUDA with bf16
autocast when a GPU is present (else fp32 on the CPU), and a CUDA out-of-memory error halves the batch
and retries instead of failing. With ``maxp = true`` a body longer than the window is cut into
overlapping word windows, each scored with the query after the document's title, and the pair gets the
best window (MaxP, Dai & Callan 2019): the model reads a long document's end, which a cut at
``max_length`` tokens never shows it. MaxP values have a code version of their own (``MAXP_CODE_VERSION``;
before 2026-11-23 the windows cut title + text and carried no title), so plain values keep theirs.

A **cross-fitted** model folder (``finetune-ce`` with ``cross_fit = true``: a ``cross_fit.json`` naming fold
models, each trained on one side of the training queries) is one feature: a query some fold learned from
gets the mean logit of the folds that did not (with two folds, the other one's), any other query (test, an
app's) the mean of all folds. So no query's value comes from a model that saw its judgments, and the ranker
learns from every training query.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.frames import QID, QUERY, TEXT, TITLE, doc_text
from retrieval.models import require, resolve_device, resolve_model
from retrieval.params import ConfigError

from .base import BaseExtractor, TrainedOnQueries, digest, model_fingerprint

INSTALL = "pip install 'fusion-ltr[neural]'"
DEFAULT_CROSSENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"


@dataclass(frozen=True)
class CrossEncoderParams:
    model: str = DEFAULT_CROSSENCODER  # a local folder (e.g. from `fusion-ltr finetune-ce`) or a hub name
    max_length: int = 256  # tokens of query + document
    model_batch_size: int = 32  # pairs per model call
    maxp: bool = False  # score overlapping windows of the body (each after the title) and keep the best
    window_words: int = 150  # maxp: words per window of the body
    stride_words: int = 75  # maxp: words between window starts (<= window_words)
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps": never changes a value
    # "int8": dynamic int8 quantization of the linear layers (CPU only; part of the version, so its
    # values never mix with fp32 ones in the store); "none": fp32 (bf16 autocast on CUDA)
    quantize: str = "none"
    # a model folder whose classification head is not in its checkpoint (a bi-encoder or base model named by
    # mistake) is refused: a freshly initialised head gives other values in every process. True: it is meant
    new_head: bool = False
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 256  # pairs per batch of the feature build (stored as each batch completes)


def checkpoint_keys(folder: str) -> set[str] | None:
    """The parameter names stored in a local model folder's checkpoint (read without loading a tensor), or
    None when it is not a local folder with a checkpoint this function reads (a hub name: not checked)."""
    import json

    folder = Path(folder)
    if not folder.is_dir():
        return None
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"])
    if (folder / "model.safetensors").exists():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            return set(f.keys())
    if (folder / "pytorch_model.bin").exists():
        torch = require("torch", INSTALL)
        return set(torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True))
    return None


def newly_initialised(module, folder: str) -> list[str]:
    """The loaded ``module``'s parameters that ``folder``'s checkpoint does not hold (with or without the
    base model's prefix, e.g. ``bert.``): those transformers initialised at random."""
    stored = checkpoint_keys(folder)
    if stored is None:
        return []
    prefix = getattr(module, "base_model_prefix", "") or ""
    missing = []
    for name, _ in module.named_parameters():
        short = name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name
        if name not in stored and short not in stored and f"{prefix}.{name}" not in stored:
            missing.append(name)
    return missing


def windows(text: str, size: int, stride: int) -> list[str]:
    """Overlapping word windows covering ``text`` (one window when it is short enough)."""
    words = text.split()
    if len(words) <= size:
        return [text]
    starts = list(range(0, len(words) - size + 1, stride))
    if starts[-1] + size < len(words):
        starts.append(len(words) - size)
    return [" ".join(words[s:s + size]) for s in starts]


class CrossEncoderExtractor(TrainedOnQueries, BaseExtractor):
    """``ce_score``: the cross-encoder's relevance logit for (query, title + text)."""

    name = "crossencoder"
    CODE_VERSION = "1"
    MAXP_CODE_VERSION = "2"  # windows of the body, each after the title
    Params = CrossEncoderParams
    FEATURES = {"ce_score": "cross-encoder relevance logit"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        if self.params.maxp and not 0 < self.params.stride_words <= self.params.window_words:
            raise ValueError("features.crossencoder: need 0 < stride_words <= window_words for MaxP")
        if self.params.maxp:  # the instance's values are MaxP's: their own code version
            self.CODE_VERSION = self.MAXP_CODE_VERSION
        if self.params.quantize not in ("none", "int8"):
            raise ConfigError(f"features.crossencoder.quantize: expected 'none' or 'int8', found {self.params.quantize!r}")
        self._models = None
        self._trained = None
        self._fold_trained = None
        self.device = None

    def folds(self) -> list[Path] | None:
        """The fold model folders of a cross-fitted model (None for a plain model or a hub name)."""
        from .model_folders import cross_fit_folds

        model = self.local_path(self.params.model)
        return cross_fit_folds(model) if Path(model).is_dir() else None

    def _model_fingerprint(self) -> str | None:
        if "_fingerprint" not in self.__dict__:
            folds = self.folds()
            if not folds:
                return super()._model_fingerprint()
            self.__dict__["_fingerprint"] = digest([model_fingerprint(str(f)) for f in folds])
        return self.__dict__["_fingerprint"]

    def _load(self, name: str):
        st = require("sentence_transformers", INSTALL)
        torch = require("torch", INSTALL)
        try:
            model = st.CrossEncoder(resolve_model(name), device=self.device, max_length=self.params.max_length,
                                    activation_fn=torch.nn.Identity())
        except OSError as exc:
            raise FileNotFoundError(
                f"cross-encoder {self.params.model!r} is neither a local model folder nor loadable from the "
                f"hub ({type(exc).__name__}: {str(exc)[:200]}). Train one with `fusion-ltr finetune-ce "
                "--config ...`, or name a hub model (needs a network)") from exc
        missing = newly_initialised(model.model, resolve_model(name))
        if missing and not self.params.new_head:
            raise ConfigError(
                f"cross-encoder {self.params.model!r}: its checkpoint has no weights for {missing[:4]}, so they were "
                "newly initialised at random (a bi-encoder or base model, not a cross-encoder?): its scores would "
                "differ from process to process. Name a trained cross-encoder (`fusion-ltr finetune-ce`), or set "
                "features.extractors.crossencoder.new_head = true if a random head is meant")
        if self.params.quantize == "int8":
            if not self.device.startswith("cpu"):
                raise ConfigError(f"features.crossencoder.quantize = 'int8' runs on the CPU only; the device "
                                  f"is {self.device!r} (set device = 'cpu', or quantize = 'none' on a GPU)")
            torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        return model

    @property
    def models(self) -> list:
        """The loaded model, or a cross-fitted folder's fold models in its order."""
        if self._models is None:
            self.device = resolve_device(self.params.device)
            folds = self.folds()
            names = [str(f) for f in folds] if folds else [self.local_path(self.params.model)]
            self._models = [self._load(n) for n in names]
        return self._models

    @property
    def model(self):
        """The (first) loaded model."""
        return self.models[0]

    def score(self, queries: list[str], docs: list[str], model=None) -> np.ndarray:
        """Logits of (query, doc) text pairs, in input order, whatever the batching (``model``: one of
        :attr:`models`; default the first)."""
        torch = require("torch", INSTALL)
        model = self.model if model is None else model
        order = np.argsort([-(len(q) + len(d)) for q, d in zip(queries, docs)], kind="stable")
        out = np.empty(len(queries), dtype=np.float64)
        bs, start = self.params.model_batch_size, 0
        while start < len(order):
            idx = order[start:start + bs]
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                    scores = model.predict([(queries[i], docs[i]) for i in idx], batch_size=len(idx),
                                           show_progress_bar=False, convert_to_numpy=True)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                continue
            out[idx] = np.asarray(scores, dtype=np.float64).reshape(-1)
            start += len(idx)
        return out

    def trained_qids(self) -> set[str]:
        """Queries the model learned from (from its fine-tuning manifest): never scored, to keep the
        ranker from learning on leaked scores. For a cross-fitted model, the queries every fold learned from."""
        if self._trained is None:
            from .model_folders import trained_qids

            model = self.local_path(self.params.model)
            self._trained = trained_qids(model) if Path(model).exists() else set()
        return self._trained

    def fold_trained_qids(self) -> list[set[str]]:
        """The queries each of :attr:`models` learned from (one set for a plain model)."""
        if self._fold_trained is None:
            from .model_folders import trained_qids

            folds = self.folds()
            self._fold_trained = [trained_qids(f) for f in folds] if folds else [self.trained_qids()]
        return self._fold_trained

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        qids = pairs[QID].astype(str)
        total, count = np.zeros(len(pairs)), np.zeros(len(pairs))
        models = None
        for i, seen in enumerate(self.fold_trained_qids()):
            rows = ~qids.isin(seen).to_numpy()
            if rows.any():
                models = models or self.models
                total[rows] += self._score_pairs(pairs[rows], models[i])
                count[rows] += 1
        with np.errstate(invalid="ignore"):
            return {"ce_score": np.where(count > 0, total / np.maximum(count, 1), np.nan)}

    def _score_pairs(self, pairs: pd.DataFrame, model) -> np.ndarray:
        queries = pairs[QUERY].tolist()
        if not self.params.maxp:
            return self.score(queries, doc_text(pairs), model)
        titles = pairs[TITLE].fillna("").astype(str).tolist() if TITLE in pairs else [""] * len(pairs)
        owner, qs, ws = [], [], []
        for i, (q, title, body) in enumerate(zip(queries, titles, pairs[TEXT].fillna("").astype(str))):
            for w in windows(body, self.params.window_words, self.params.stride_words):
                owner.append(i)
                qs.append(q)
                ws.append(f"{title.strip()} {w}".strip())
        scores = self.score(qs, ws, model)
        best = np.full(len(pairs), -np.inf)
        np.maximum.at(best, np.asarray(owner, dtype=np.int64), scores)
        return best
