"""Fine-tune a cross-encoder with sentence-transformers' own trainer and a ranking loss.

Training data: each training query with one positive (a judged relevant document) and ``negatives``
hard negatives sampled from the first-stage candidates (top ``negatives_from``, judged documents
excluded); synthetic queries and title pseudo-queries (:mod:`ranker.training.synthetic`) are mixed in the
same way, with their source document as the positive.

Leakage exclusion: the training queries are split once, by a seeded hash of the query id, into the
queries the cross-encoder may learn from and the queries reserved for the ranker
(``ranker_fraction``). The model's ``manifest.json`` lists the queries it was trained on; the
ranker refuses to learn from cross-encoder scores of any of them.

Checkpoints are written every ``checkpoint_steps`` steps; a rerun of an interrupted training resumes
from the last one. The output folder holds ``model/`` (loadable by the cross-encoder extractor),
``checkpoints/`` and ``manifest.json`` (base model, data, loss, seed, steps, wall time, hardware).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.data import hash_split
from retrieval.frames import DOCNO, LABEL, QID, QUERY, RANK, doc_text
from retrieval.models import DEFAULT_BIENCODER, require, resolve_device, resolve_model
from retrieval.params import ConfigError

from .synthetic import PSEUDO_PREFIXES, SYNTHETIC_PREFIX, TITLE_PREFIX

INSTALL = "pip install 'fusion-ltr[neural]'"
LOSSES = ("softmax", "listnet", "lambdaloss", "bce")
#: ListNet's target is softmax(labels): with binary labels that is nearly uniform (0.28 on the positive
#: vs 0.10 on each of 7 negatives), a weak signal. "softmax" scales the labels so the target is one-hot:
#: the softmax cross-entropy over each group of 1 positive + negatives.
SOFTMAX_LABEL_SCALE = 20.0


@dataclass(frozen=True)
class CETrainingParams:
    base_model: str = DEFAULT_BIENCODER  # packaged MiniLM; online: e.g. cross-encoder/ms-marco-MiniLM-L-6-v2
    loss: str = "softmax"  # softmax | listnet | lambdaloss (listwise over 1 + negatives) | bce (pointwise)
    negatives: int = 7  # hard negatives per query in each training group
    negatives_from: int = 30  # sample hard negatives among the first-stage top-N
    max_length: int = 192  # tokens of query + document
    epochs: float = 1.0  # passes over the training groups (a fraction: part of one)
    batch_size: int = 4  # queries per step (each with 1 + negatives documents)
    learning_rate: float = 5e-5  # AdamW's peak learning rate
    warmup_ratio: float = 0.1  # share of the steps the learning rate warms up over
    seed: int = 42  # seeds the query split, negative sampling and training
    max_queries: int = 0  # cap on real training queries (0: every query the split gives the CE)
    use_real: bool = True  # learn from the real training qrels
    synthetic: int = 0  # documents to generate synthetic queries for (0: none; see ranker.training.synthetic)
    synthetic_label: str = "Query"  # the word the few-shot prompt uses, e.g. "Claim" for SciFact
    synthetic_filter_k: int = 20  # a synthetic query is kept when its document is in the first stage's top-k for it
    title_queries: int = 0  # documents whose title is a query for their body (0: none; synthetic.title_queries)
    ranker_fraction: float = 0.5  # share of training queries reserved for the ranker
    # true: cross-fitting. Two models, one per side of the split (each with at most max_queries real queries,
    # and the same pseudo-queries): each scores the other side's queries, so the ranker learns from every
    # training query with scores of a model that never saw it; other queries get the mean of both
    cross_fit: bool = False
    checkpoint_steps: int = 50  # steps between checkpoints (an interrupted run resumes from the last)
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps"

    def check(self) -> "CETrainingParams":
        if self.loss not in LOSSES:
            raise ConfigError(f"finetune.loss: expected one of {list(LOSSES)}, found {self.loss!r}")
        if not 0 <= self.ranker_fraction < 1:
            raise ConfigError(f"finetune.ranker_fraction must be in [0, 1), found {self.ranker_fraction}")
        if self.negatives < 1 or self.negatives_from <= self.negatives:
            raise ConfigError("finetune: need negatives >= 1 and negatives_from > negatives")
        if not self.use_real and not self.synthetic and not self.title_queries:
            raise ConfigError("finetune: nothing to learn from (use_real = false, synthetic = 0, title_queries = 0)")
        return self


def split_queries(qids, ranker_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split query ids into (cross-encoder queries, ranker queries), disjoint and deterministic.

    A query's side depends only on its id and the seed, so adding queries never moves old ones.
    """
    return hash_split(qids, ranker_fraction, seed)


def training_groups(queries: pd.DataFrame, qrels: pd.DataFrame, candidates: pd.DataFrame,
                    corpus: pd.DataFrame, *, negatives: int, negatives_from: int, seed: int) -> list[dict]:
    """One group per (query, relevant document): ``{"query", "docs", "labels"}`` with the positive
    first and ``negatives`` hard negatives from the query's first-stage top ``negatives_from``.

    Queries with fewer available negatives get what there is; queries with no candidate are skipped.
    """
    rng = np.random.default_rng(seed)
    text = dict(zip(corpus[DOCNO].astype(str), doc_text(corpus)))
    relevant = qrels[qrels[LABEL] > 0].groupby(QID)[DOCNO].apply(list).to_dict()
    judged = qrels.groupby(QID)[DOCNO].apply(set).to_dict()
    top = candidates[candidates[RANK] <= negatives_from].sort_values([QID, RANK]).groupby(QID)[DOCNO].apply(list).to_dict()
    groups = []
    for qid, query in zip(queries[QID].astype(str), queries[QUERY]):
        pool = [d for d in top.get(qid, []) if d not in judged.get(qid, set())]
        if not pool:
            continue
        for pos in relevant.get(qid, []):
            if pos not in text:
                continue
            negs = list(rng.choice(pool, size=min(negatives, len(pool)), replace=False))
            groups.append({"qid": qid, "query": query, "docs": [text[pos]] + [text[d] for d in negs],
                           "labels": [1.0] + [0.0] * len(negs)})
    return groups


def _dataset(groups: list[dict], loss: str):
    datasets = require("datasets", INSTALL)
    if loss == "bce":
        rows = [(g["query"], d, lab) for g in groups for d, lab in zip(g["docs"], g["labels"])]
        return datasets.Dataset.from_dict({"query": [r[0] for r in rows], "doc": [r[1] for r in rows],
                                           "label": [r[2] for r in rows]})
    scale = SOFTMAX_LABEL_SCALE if loss == "softmax" else 1.0
    return datasets.Dataset.from_dict({"query": [g["query"] for g in groups], "docs": [g["docs"] for g in groups],
                                       "labels": [[scale * lab for lab in g["labels"]] for g in groups]})


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder under ``folder`` (a rerun resumes from it), or None."""
    ckpts = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) if folder.exists() else []
    return str(ckpts[-1]) if ckpts else None


def hardware_name(torch, device: str) -> str:
    """What a training ran on, for its manifest."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def finetune(groups: list[dict], params: CETrainingParams, output: str | Path, *, meta: dict | None = None,
             max_steps: int = -1, callbacks=None, progress: bool = True) -> dict:
    """Train a cross-encoder on ``groups``; resume from the last checkpoint in ``output`` if any.

    Returns the manifest (also written to ``output/manifest.json``).
    """
    params.check()
    if not groups:
        raise ValueError("finetune: no training groups (no query with a positive and a candidate negative)")
    st = require("sentence_transformers", INSTALL)
    transformers = require("transformers", INSTALL)
    torch = require("torch", INSTALL)
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments, losses

    output = Path(output)
    ckpt_dir = output / "checkpoints"
    device = resolve_device(params.device)
    transformers.set_seed(params.seed)  # the new classification head is initialised from this seed
    model = st.CrossEncoder(resolve_model(params.base_model), num_labels=1, max_length=params.max_length,
                            device=device)
    if params.loss in ("listnet", "softmax"):
        loss = losses.ListNetLoss(model)
    elif params.loss == "lambdaloss":
        loss = losses.LambdaLoss(model)
    else:
        loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(params.negatives)))
    per_step = params.batch_size if params.loss != "bce" else params.batch_size * (1 + params.negatives)
    args = CrossEncoderTrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=params.epochs, max_steps=max_steps,
        per_device_train_batch_size=per_step, learning_rate=params.learning_rate, warmup_steps=params.warmup_ratio,  # a float < 1 is a ratio
        seed=params.seed, data_seed=params.seed, save_strategy="steps", save_steps=params.checkpoint_steps,
        save_total_limit=2, logging_steps=10, report_to="none", bf16=device.startswith("cuda"),
        use_cpu=not device.startswith("cuda"), disable_tqdm=not progress, dataloader_num_workers=0,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=_dataset(groups, params.loss), loss=loss,
                                  callbacks=callbacks)
    resume = last_checkpoint(ckpt_dir)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    model.save(str(output / "model"))
    losses_logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    hardware = hardware_name(torch, device)
    manifest = {
        "base_model": params.base_model, "loss": params.loss, "seed": params.seed, "params": asdict(params),
        "data": {"groups": len(groups), "queries": len({g["qid"] for g in groups}),
                 "synthetic_groups": sum(g["qid"].startswith(SYNTHETIC_PREFIX) for g in groups),
                 "title_groups": sum(g["qid"].startswith(TITLE_PREFIX) for g in groups),
                 "train_qids": sorted({g["qid"] for g in groups if not g["qid"].startswith(PSEUDO_PREFIXES)})},
        "steps": trainer.state.global_step, "resumed_from": resume, "train_seconds": seconds,
        "train_loss_first_last": [losses_logged[0], losses_logged[-1]] if losses_logged else None,
        "training_loss": result.training_loss, "device": device, "hardware": hardware,
        "library_versions": {"sentence_transformers": st.__version__, "transformers": transformers.__version__,
                             "torch": torch.__version__},
        **(meta or {}),
    }
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest
