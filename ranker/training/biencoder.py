"""Fine-tune the bi-encoder in domain (issue 13): sentence-transformers' trainer, in-batch + hard negatives.

Training data: each training query on the cross-encoder's side of the split (never a ranker or test
query: :func:`ranker.training.crossencoder.split_queries`) with each of its relevant documents as the positive and
one hard negative drawn from its BM25 top ``negatives_from`` (judged documents excluded). The loss is
MultipleNegativesRankingLoss: the positive against every other document in the batch (the other queries'
positives and every hard negative), the standard recipe for retrieval bi-encoders. ``title_queries`` adds
free pseudo-queries (:func:`title_examples`: a title as the query for its body), which take no query from
the ranker.

The output folder holds ``model/`` (a SentenceTransformer folder: the dense retriever's and the
``biencoder`` extractor's ``model``), ``checkpoints/`` (a rerun resumes from the last one) and
``manifest.json`` (base model, data, the queries it learned from, steps, wall time, hardware). Its
embeddings differ from the base model's, so dense retrieval and ``cosine`` get new cache keys and
versions (the model folder's content is part of them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.frames import DOCNO, LABEL, QID, QUERY, RANK, doc_text
from retrieval.models import DEFAULT_BIENCODER, require, resolve_device, resolve_model
from retrieval.params import ConfigError

from .crossencoder import hardware_name, last_checkpoint
from .synthetic import PSEUDO_PREFIXES, TITLE_PREFIX, title_queries

INSTALL = "pip install 'fusion-ltr[neural]'"


@dataclass(frozen=True)
class BETrainingParams:
    base_model: str = DEFAULT_BIENCODER  # the encoder fine-tuned (packaged alias, local folder or hub name)
    epochs: float = 1.0  # passes over the training examples (a fraction: part of one)
    batch_size: int = 16  # queries per step: each one's positive and hard negative are the others' negatives
    learning_rate: float = 2e-5  # AdamW's peak learning rate
    warmup_ratio: float = 0.1  # share of the steps the learning rate warms up over
    max_length: int = 256  # tokens per text
    hard_negatives: bool = True  # one BM25 hard negative per query (else in-batch negatives only)
    negatives_from: int = 30  # the hard negative is drawn from the query's BM25 top-N (judged documents excluded)
    seed: int = 42  # seeds the split, sampling and training
    ranker_fraction: float = 0.5  # the same split as the cross-encoder's: learn from the CE side only
    max_queries: int = 0  # cap on real training queries (0: every query of its side of the split)
    # documents whose title is a query for their body (0: none): ranker.training.synthetic.title_queries, the
    # cross-encoder's free pseudo-queries; no real query, so the ranker keeps all of its own
    title_queries: int = 0
    checkpoint_steps: int = 100  # steps between checkpoints (an interrupted run resumes from the last)
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps"

    def check(self) -> "BETrainingParams":
        if not 0 <= self.ranker_fraction < 1:
            raise ConfigError(f"finetune_biencoder.ranker_fraction must be in [0, 1), found {self.ranker_fraction}")
        if self.title_queries < 0:
            raise ConfigError(f"finetune_biencoder.title_queries must be >= 0, found {self.title_queries}")
        if self.batch_size < 2:
            raise ConfigError(f"finetune_biencoder.batch_size must be >= 2 (in-batch negatives), found {self.batch_size}")
        return self


def training_examples(queries: pd.DataFrame, qrels: pd.DataFrame, candidates: pd.DataFrame | None,
                      corpus: pd.DataFrame, *, negatives_from: int, seed: int) -> list[dict]:
    """One example per (query, relevant document): ``{"qid", "anchor", "positive"[, "negative"]}``; the
    negative is drawn from the query's ``candidates`` top ``negatives_from`` minus its judged documents
    (no negative: ``candidates`` None, or none left)."""
    rng = np.random.default_rng(seed)
    text = dict(zip(corpus[DOCNO].astype(str), doc_text(corpus)))
    relevant = qrels[qrels[LABEL] > 0].groupby(QID)[DOCNO].apply(list).to_dict()
    judged = qrels.groupby(QID)[DOCNO].apply(set).to_dict()
    top = {} if candidates is None else candidates[candidates[RANK] <= negatives_from].sort_values(
        [QID, RANK]).groupby(QID)[DOCNO].apply(list).to_dict()
    out = []
    for qid, query in zip(queries[QID].astype(str), queries[QUERY]):
        pool = [d for d in top.get(qid, []) if d not in judged.get(qid, set()) and d in text]
        for pos in relevant.get(qid, []):
            if pos not in text:
                continue
            ex = {"qid": qid, "anchor": query, "positive": text[pos]}
            if candidates is not None and pool:
                ex["negative"] = text[pool[int(rng.integers(len(pool)))]]
            out.append(ex)
    if candidates is not None:  # the trainer needs one column set: drop examples without a negative
        out = [e for e in out if "negative" in e]
    return out


def title_examples(corpus: pd.DataFrame, n_docs: int, retriever, *, negatives_from: int, seed: int) -> list[dict]:
    """Examples from title pseudo-queries (:func:`ranker.training.synthetic.title_queries`): a document's title as
    the anchor, its body (title removed) as the positive and, with a ``retriever`` (a fitted first-stage
    retriever, e.g. the run's BM25), the body of another document from the title's top ``negatives_from``
    as the hard negative. Bodies only, as for the cross-encoder: a model shown the title in the positive
    would learn to match titles to themselves."""
    queries, bodies = title_queries(corpus, n_docs, seed)
    if queries.empty:
        return []
    qrels = pd.DataFrame({QID: queries[QID], DOCNO: queries[DOCNO], LABEL: 1})
    cands = None if retriever is None else retriever.retrieve(queries[[QID, QUERY]], negatives_from)
    return training_examples(queries[[QID, QUERY]], qrels, cands, bodies, negatives_from=negatives_from, seed=seed)


def finetune(examples: list[dict], params: BETrainingParams, output: str | Path, *, meta: dict | None = None,
             progress: bool = True) -> dict:
    """Train the bi-encoder on ``examples``; resume from the last checkpoint in ``output`` if any. Returns
    the manifest (also ``output/manifest.json``)."""
    params.check()
    if not examples:
        raise ValueError("finetune_biencoder: no training example (no query with a relevant document)")
    st = require("sentence_transformers", INSTALL)
    transformers = require("transformers", INSTALL)
    torch = require("torch", INSTALL)
    datasets = require("datasets", INSTALL)
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    output = Path(output)
    ckpt_dir = output / "checkpoints"
    device = resolve_device(params.device)
    transformers.set_seed(params.seed)
    model = st.SentenceTransformer(resolve_model(params.base_model), device=device)
    model.max_seq_length = params.max_length
    columns = ["anchor", "positive"] + (["negative"] if "negative" in examples[0] else [])
    data = datasets.Dataset.from_dict({c: [e[c] for e in examples] for c in columns})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=params.epochs, per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate, warmup_steps=params.warmup_ratio, seed=params.seed, data_seed=params.seed,
        # a query with two relevant documents must not meet its own positive as a negative in one batch
        batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="steps", save_steps=params.checkpoint_steps,
        save_total_limit=2, logging_steps=10, report_to="none", use_cpu=not device.startswith("cuda"),
        bf16=device.startswith("cuda"), disable_tqdm=not progress, dataloader_num_workers=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    resume = last_checkpoint(ckpt_dir)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    model.save(str(output / "model"))
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    hardware = hardware_name(torch, device)
    manifest = {"base_model": params.base_model, "loss": "MultipleNegativesRankingLoss", "params": asdict(params),
                "data": {"examples": len(examples), "with_hard_negative": "negative" in columns,
                         "title_examples": sum(e["qid"].startswith(TITLE_PREFIX) for e in examples),
                         # real queries only: the ones the leakage exclusion keeps from the ranker
                         "train_qids": sorted({e["qid"] for e in examples if not e["qid"].startswith(PSEUDO_PREFIXES)})},
                "steps": trainer.state.global_step, "resumed_from": resume, "train_seconds": seconds,
                "train_loss_first_last": [logged[0], logged[-1]] if logged else None,
                "training_loss": result.training_loss, "device": device, "hardware": hardware,
                "library_versions": {"sentence_transformers": st.__version__, "transformers": transformers.__version__,
                                     "torch": torch.__version__}, **(meta or {})}
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest
