"""Synthetic training queries, InPars/Promptagator style, with the local causal LM.

For each sampled document, a few-shot prompt (training queries with their relevant documents, then the
document) asks the LM for one query; greedy decoding, stopped at the end of the line. A generated
query is kept only if a first-stage retriever ranks its source document in its top ``filter_k``
(consistency filtering). Generated queries are cached in the feature store, keyed by document
content and generator settings, so they are made once.

Title pseudo-queries (:func:`title_queries`) cost nothing to make: a document's title is the query for
its body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from retrieval.frames import DOCNO, QID, QUERY, RANK, TEXT, TITLE, doc_text

from features.lm_likelihood import DEFAULT_LM, LMLikelihoodExtractor, LMParams

#: Query-id prefixes of the generated training queries (never a real query: the leakage exclusion skips them).
SYNTHETIC_PREFIX = "syn:"
TITLE_PREFIX = "title:"
PSEUDO_PREFIXES = (SYNTHETIC_PREFIX, TITLE_PREFIX)


@dataclass(frozen=True)
class SyntheticParams:
    model: str = DEFAULT_LM
    n_docs: int = 500  # documents sampled from the corpus
    examples: int = 3  # few-shot examples (training query + its relevant document)
    doc_tokens: int = 160  # budget of the target document in the prompt
    example_doc_tokens: int = 48  # budget of each example document
    max_new_tokens: int = 32
    batch_size: int = 8
    label: str = "Query"  # e.g. "Claim" for SciFact-like data
    filter_k: int = 20  # keep a query if a retriever ranks its source document in this top-k
    seed: int = 42
    device: str = "auto"

    def version(self) -> str:
        keys = {k: v for k, v in asdict(self).items() if k not in ("n_docs", "batch_size", "filter_k", "device")}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]


def build_prompt(examples: list[tuple[str, str]], document: str, label: str = "Query") -> str:
    """The few-shot prompt: examples as ``Document: ...\\n<label>: ...`` blocks, then the document."""
    blocks = [f"Document: {d}\n{label}: {q}" for d, q in examples]
    blocks.append(f"Document: {document}\n{label}:")
    return "\n\n".join(blocks)


def clean(text: str) -> str:
    """First line of a generation, stripped; empty if nothing usable."""
    line = text.strip().split("\n")[0].strip()
    return line if len(line.split()) >= 3 else ""


def filter_by_retrieval(generated: pd.DataFrame, runs: list[pd.DataFrame], k: int) -> pd.DataFrame:
    """Mark ``kept`` the generated queries (qid, docno = source) whose source document is in the
    top-``k`` of at least one run (runs: qid, docno, rank)."""
    hits = set()
    for run in runs:
        top = run[run[RANK] <= k]
        hits |= set(zip(top[QID].astype(str), top[DOCNO].astype(str)))
    out = generated.copy()
    out["kept"] = [(str(q), str(d)) in hits for q, d in zip(out[QID], out[DOCNO])]
    return out


class QueryGenerator:
    """Greedy few-shot query generation with a causal LM (the LM extractor's loader and tokenizer)."""

    def __init__(self, params: SyntheticParams):
        self.params = params
        self._lm = LMLikelihoodExtractor(LMParams(model=params.model, device=params.device))

    def _truncate(self, tok, text: str, n: int) -> str:
        ids = tok(text, add_special_tokens=False).input_ids
        return text if len(ids) <= n else tok.decode(ids[:n])

    def generate(self, documents: list[str], examples: list[tuple[str, str]], progress: bool = True) -> list[str]:
        from retrieval.models import require

        torch = require("torch", "pip install torch")
        model, tok = self._lm._load()
        p = self.params
        shots = [(self._truncate(tok, d, p.example_doc_tokens), q) for d, q in examples]
        prompts = [build_prompt(shots, self._truncate(tok, d, p.doc_tokens), p.label) for d in documents]
        old_side = tok.padding_side
        tok.padding_side = "left"  # generation continues from the right end
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        out = []
        try:
            for start in tqdm(range(0, len(prompts), p.batch_size), desc="synthetic queries", disable=not progress):
                enc = tok(prompts[start:start + p.batch_size], return_tensors="pt", padding=True).to(self._lm.device)
                with torch.inference_mode():
                    gen = model.generate(**enc, max_new_tokens=p.max_new_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
                out += [clean(t) for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
        finally:
            tok.padding_side = old_side
        return out


def few_shot_examples(queries: pd.DataFrame, qrels: pd.DataFrame, corpus: pd.DataFrame, n: int, seed: int):
    """``n`` (document text, query) pairs drawn from the training qrels, seeded."""
    text = dict(zip(corpus[DOCNO].astype(str), doc_text(corpus)))
    qtext = dict(zip(queries[QID].astype(str), queries[QUERY]))
    rel = qrels[(qrels["label"] > 0) & qrels[QID].isin(set(qtext)) & qrels[DOCNO].isin(set(text))]
    rel = rel.drop_duplicates(QID).sample(n=min(n, len(rel)), random_state=seed)
    return [(text[d], qtext[q]) for q, d in zip(rel[QID], rel[DOCNO])]


def synthetic_queries(store, corpus: pd.DataFrame, examples, params: SyntheticParams,
                      progress: bool = True) -> pd.DataFrame:
    """Generated queries (qid ``syn:<docno>``, query, docno) for ``params.n_docs`` sampled documents,
    generating only those not cached in the store for these settings."""
    from features.store import text_hash

    rng = np.random.default_rng(params.seed)
    nonempty = corpus[[bool(t.strip()) for t in doc_text(corpus)]]
    sample = nonempty.iloc[np.sort(rng.choice(len(nonempty), size=min(params.n_docs, len(nonempty)), replace=False))]
    texts = doc_text(sample)
    hashes = [text_hash(t) for t in texts]
    version = params.version()
    cached = store.synthetic(version)
    have = set(zip(cached[DOCNO], cached["doc_hash"]))
    todo = [i for i, (d, h) in enumerate(zip(sample[DOCNO], hashes)) if (d, h) not in have]
    if todo:
        gen = QueryGenerator(params)
        made = gen.generate([texts[i] for i in todo], examples, progress=progress)
        store.put_synthetic(pd.DataFrame({DOCNO: [sample[DOCNO].iloc[i] for i in todo],
                                          "doc_hash": [hashes[i] for i in todo], QUERY: made}), version)
        cached = store.synthetic(version)
    wanted = pd.DataFrame({DOCNO: sample[DOCNO].astype(str).tolist(), "doc_hash": hashes})
    out = wanted.merge(cached, on=[DOCNO, "doc_hash"], how="inner")
    out = out[out[QUERY].str.len() > 0]
    out[QID] = SYNTHETIC_PREFIX + out[DOCNO]
    return out[[QID, QUERY, DOCNO]].reset_index(drop=True)


def title_queries(corpus: pd.DataFrame, n_docs: int, seed: int, min_words: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudo-queries that cost nothing to make: a document's title as the query for its body.

    Returns (queries: qid ``title:<docno>``, query, docno) for up to ``n_docs`` seeded-sample documents
    whose title has at least ``min_words`` words and whose body is not empty, and the corpus with every
    title removed: the groups built from these queries must show bodies only, the positive's as the
    negatives', or the model learns "no title = relevant". The signal is weaker than a real query's
    (a title names a paper's topic, a claim states a finding) but covers the whole corpus at no cost.
    """
    if TITLE not in corpus:
        return pd.DataFrame(columns=[QID, QUERY, DOCNO]), corpus
    titles = corpus[TITLE].fillna("").astype(str).str.strip()
    bodies = corpus[TEXT].fillna("").astype(str).str.strip()
    usable = corpus[(titles.str.split().str.len() >= min_words) & (bodies.str.len() > 0)]
    rng = np.random.default_rng(seed)
    pick = usable.iloc[np.sort(rng.choice(len(usable), size=min(n_docs, len(usable)), replace=False))]
    queries = pd.DataFrame({QID: TITLE_PREFIX + pick[DOCNO].astype(str), QUERY: pick[TITLE].astype(str).str.strip(),
                            DOCNO: pick[DOCNO].astype(str)}).reset_index(drop=True)
    return queries, corpus.assign(**{TITLE: ""})
