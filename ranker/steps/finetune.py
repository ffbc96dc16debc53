"""``fusion-ltr finetune-ce``: fine-tune the cross-encoder on the CE side of the training queries
(see :mod:`ranker.training.crossencoder`), optionally with synthetic queries (:mod:`ranker.training.synthetic`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from features import model_folders
from ..training import crossencoder as ce_training
from features.store import FeatureStore
from retrieval import BM25Retriever, DenseRetriever, read_trec_run, rrf
from retrieval.errors import UsageError
from retrieval.frames import QID


#: The folds of a cross-fitted cross-encoder: ``a`` learns from the cross-encoder's side of the split, ``b``
#: from the ranker's side.
FOLDS = ("a", "b")


def needs_finetune(run) -> bool:
    """A configured extractor's model is the one `finetune-ce` writes (so `run` must train it first)."""
    target = run.layout.crossencoder_model.resolve()
    return any(ext.model_id() and Path(ext.model_id()).resolve() == target for ext in run.extractors)


def trained_with(out: Path, params, *, plain: bool = False) -> bool:
    """A fine-tuned model exists in ``out`` and its manifest records ``params``: a cross-fitted one's index
    and every fold's model, unless ``plain`` (one model folder, e.g. a fold's)."""
    if getattr(params, "cross_fit", False) and not plain:
        if not (out / "model" / model_folders.CROSS_FIT_FILE).exists() or \
                not all(trained_with(out / f"fold-{f}", params, plain=True) for f in FOLDS):
            return False
    elif not (out / "model" / "config.json").exists():
        return False
    if not (out / "manifest.json").exists():
        return False
    # a parameter added after the model was trained counts as its default (the model was trained without it)
    recorded = {f.name: f.default for f in dataclasses.fields(params) if f.default is not dataclasses.MISSING} | (
        json.loads((out / "manifest.json").read_text()).get("params") or {})
    return json.loads(json.dumps(recorded)) == json.loads(json.dumps(dataclasses.asdict(params)))


def ce_is_trained(run) -> bool:
    """The fine-tuned cross-encoder exists and its manifest records the configured parameters."""
    return trained_with(run.layout.crossencoder, run.cfg.finetune.params)


def model_side(run, step: str, p) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """The training queries and qrels, and the split of their ids into the fine-tuned model's side (at most
    ``p.max_queries``, a seeded sample) and the ranker's side: the same code for the cross-encoder and the
    bi-encoder, so equal ``ranker_fraction``, ``seed`` and ``max_queries`` give both the same queries."""
    cfg, ds = run.cfg, run.dataset
    if not run.train_splits:
        raise UsageError(f"{step}: dataset.splits {list(cfg.dataset.splits)} has no training split besides "
                         f"the test split {cfg.dataset.test_split!r}")
    queries = pd.concat([ds.split(s)[0] for s in run.train_splits]).drop_duplicates(QID)
    qrels = pd.concat([ds.split(s)[1] for s in run.train_splits])
    side, ranker_qids = ce_training.split_queries(queries[QID], p.ranker_fraction, p.seed)
    return queries, qrels, capped(side, p), ranker_qids


def capped(qids: list[str], p) -> list[str]:
    """``qids``, or a seeded sample of ``p.max_queries`` of them when that is set."""
    if not p.max_queries:
        return qids
    return sorted(pd.Series(qids).sample(n=min(p.max_queries, len(qids)), random_state=p.seed))


def synthetic_groups(run, ce_queries: pd.DataFrame, qrels: pd.DataFrame):
    """Generate (cached), filter and turn synthetic queries into training groups with hard negatives."""
    from ranker.training import synthetic as syn

    cfg, ds = run.cfg, run.dataset
    p = cfg.finetune.params
    sp = syn.SyntheticParams(n_docs=p.synthetic, label=p.synthetic_label, filter_k=p.synthetic_filter_k, seed=p.seed)
    examples = syn.few_shot_examples(ce_queries, qrels, ds.corpus, sp.examples, sp.seed)
    with FeatureStore(run.layout.store) as store:
        generated = syn.synthetic_queries(store, ds.corpus, examples, sp, progress=run.progress)
    bm25 = BM25Retriever.load(run.layout.index / "bm25")
    dense = DenseRetriever(cfg.retrieval.dense, cache=cfg.run.cache or None).index(ds.corpus)
    runs = [bm25.retrieve(generated, p.negatives_from), dense.retrieve(generated, p.negatives_from)]
    kept = syn.filter_by_retrieval(generated, runs, sp.filter_k)
    kept = kept[kept["kept"]]
    syn_qrels = pd.DataFrame({QID: kept[QID], "docno": kept["docno"], "label": 1})
    cands = rrf(runs, k=cfg.retrieval.rrf_k, depth=p.negatives_from)
    groups = ce_training.training_groups(kept[[QID, "query"]], syn_qrels, cands, ds.corpus, negatives=p.negatives,
                                         negatives_from=p.negatives_from, seed=p.seed)
    info = {"documents": sp.n_docs, "generated": len(generated), "kept": len(kept), "filter_k": sp.filter_k,
            "generator": sp.version(), "examples": [q for _, q in examples]}
    return groups, info


def no_titles(table: str, n_docs: int, dataset: str) -> UsageError:
    """The error for ``[<table>.params] title_queries`` on a collection none of whose documents can give one."""
    return UsageError(f"{table}.params.title_queries = {n_docs}: no document of {dataset} has a title of 3 or more "
                      "words and a body; set it to 0 for this collection")


def title_groups(run, n_docs: int):
    """Training groups of title pseudo-queries: a document's title as the query, its body the positive, the
    bodies of the title's BM25 top ``negatives_from`` (the run's index) as hard negatives."""
    from ranker.training import synthetic as syn

    p = run.cfg.finetune.params
    queries, bodies = syn.title_queries(run.dataset.corpus, n_docs, p.seed)
    if queries.empty:
        raise no_titles("finetune", n_docs, run.dataset.name)
    cands = BM25Retriever.load(run.layout.index / "bm25").retrieve(queries, p.negatives_from)
    qrels = pd.DataFrame({QID: queries[QID], "docno": queries["docno"], "label": 1})
    groups = ce_training.training_groups(queries[[QID, "query"]], qrels, cands, bodies, negatives=p.negatives,
                                         negatives_from=p.negatives_from, seed=p.seed)
    return groups, {"documents": n_docs, "queries": len(queries), "groups": len(groups)}


def finetune_ce(run, quiet: bool = False, force: bool = False) -> dict | None:
    """Fine-tune the cross-encoder; skipped when a model trained with the same parameters exists
    (unless ``force``): an interrupted training resumes from its last checkpoint."""
    run.builds_features("finetune-ce")
    cfg, layout, log = run.cfg, run.layout, run.log
    p = cfg.finetune.params.check()
    if not force and ce_is_trained(run):
        log(f"finetune-ce: cached ({layout.crossencoder_model} was trained with these parameters)")
        return None
    run.folder()
    ds = run.dataset
    train = run.train_splits
    queries, qrels, ce_qids, ranker_qids = model_side(run, "finetune-ce", p)
    sides = {"a": ce_qids}
    if p.cross_fit:  # fold b learns from the ranker's side, capped the same way
        sides["b"] = capped(ranker_qids, p)
    cands = None
    if p.use_real:
        paths = [layout.retrieval_trec(cfg.features.candidates, s) for s in train]
        for path in paths:
            if not path.exists():
                raise run.missing(path, "retrieve")
        cands = pd.concat([read_trec_run(path) for path in paths])
    pseudo, meta = [], {"dataset": ds.name}
    if p.synthetic:  # few-shot examples from the cross-encoder's side (fold a's), shared by both folds
        pseudo, meta["synthetic"] = synthetic_groups(run, queries[queries[QID].isin(set(ce_qids))], qrels)
    if p.title_queries:
        title, meta["title_queries"] = title_groups(run, p.title_queries)
        pseudo = pseudo + title
    out = layout.crossencoder
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps({"ce_qids": ce_qids, "ranker_qids": ranker_qids}, indent=1))
    manifests = {}
    for fold, qids in sides.items():
        fold_out = out / f"fold-{fold}" if p.cross_fit else out
        if p.cross_fit and not force and trained_with(fold_out, p, plain=True):
            log(f"finetune-ce: fold {fold} cached ({fold_out / 'model'})")
            manifests[fold] = json.loads((fold_out / "manifest.json").read_text())
            continue
        groups = []
        if cands is not None:
            groups = ce_training.training_groups(queries[queries[QID].isin(set(qids))], qrels, cands, ds.corpus,
                                                 negatives=p.negatives, negatives_from=p.negatives_from, seed=p.seed)
        groups += pseudo
        other = ranker_qids if fold == "a" else ce_qids  # the side this model scores for the ranker
        log(f"finetune-ce{f' fold {fold}' if p.cross_fit else ''}: {len(groups)} groups from {len(qids)} real "
            f"queries (the ranker may learn from the other {len(queries) - len(qids)} training queries), "
            f"loss {p.loss}, base {p.base_model}")
        manifests[fold] = ce_training.finetune(groups, p, fold_out, meta={**meta, "ranker_qids": other},
                                               progress=run.progress and not quiet)
        m = manifests[fold]
        log(f"model: {fold_out / 'model'} ({m['steps']} steps, {m['train_seconds']:.0f}s on {m['hardware']})")
    if not p.cross_fit:
        return manifests["a"]
    index = out / "model"
    index.mkdir(parents=True, exist_ok=True)
    (index / model_folders.CROSS_FIT_FILE).write_text(json.dumps({"folds": [f"../fold-{f}/model" for f in FOLDS]}))
    manifest = {"params": dataclasses.asdict(p), "cross_fit": {f: str(out / f"fold-{f}") for f in FOLDS},
                "steps": sum(m["steps"] for m in manifests.values()),
                "train_seconds": sum(m["train_seconds"] for m in manifests.values()),
                "hardware": manifests["b"]["hardware"], **meta}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    log(f"model: {index} (cross-fitted: folds {', '.join(FOLDS)})")
    return manifest


# ---------------------------------------------------------------------------------- bi-encoder
def needs_finetune_be(run) -> bool:
    """Dense retrieval's or the bi-encoder extractor's model is the one `finetune-be` writes."""
    target = run.layout.biencoder_model.resolve()
    names = [run.cfg.retrieval.dense.model] + [e.model_id() for e in run.extractors if e.name == "biencoder"]
    return any(n and Path(n).resolve() == target for n in names)


def be_is_trained(run) -> bool:
    return trained_with(run.layout.biencoder, run.cfg.finetune_biencoder.params)


def finetune_be(run, quiet: bool = False, force: bool = False) -> dict | None:
    """Fine-tune the bi-encoder in domain (:mod:`ranker.training.biencoder`) on the cross-encoder's side of the
    training queries; skipped when a model trained with the same parameters exists (unless ``force``)."""
    from ranker.training import biencoder as be_training
    from retrieval import BM25Retriever

    run.builds_features("finetune-be")
    cfg, layout, log = run.cfg, run.layout, run.log
    p = cfg.finetune_biencoder.params.check()
    if not force and be_is_trained(run):
        log(f"finetune-be: cached ({layout.biencoder_model} was trained with these parameters)")
        return None
    run.folder()
    ds = run.dataset
    queries, qrels, be_qids, ranker_qids = model_side(run, "finetune-be", p)
    be_queries = queries[queries[QID].isin(set(be_qids))]
    cands = bm25 = None
    if p.hard_negatives:  # BM25 with the run's settings (the first stage is not retrieved yet)
        bm25 = BM25Retriever(cfg.retrieval.bm25).index(ds.corpus)
        cands = bm25.retrieve(be_queries, p.negatives_from)
    examples = be_training.training_examples(be_queries, qrels, cands, ds.corpus, negatives_from=p.negatives_from,
                                             seed=p.seed)
    if p.title_queries:
        titles = be_training.title_examples(ds.corpus, p.title_queries, bm25, negatives_from=p.negatives_from,
                                            seed=p.seed)
        if not titles:
            raise no_titles("finetune_biencoder", p.title_queries, ds.name)
        examples += titles
    log(f"finetune-be: {len(examples)} examples from {len(be_qids)} queries"
        + (f" and {len(titles)} titles" if p.title_queries else "") + " (the ranker may learn from the other "
        f"{len(queries) - len(be_qids)} training queries), "
        f"base {p.base_model}" + (", BM25 hard negatives" if cands is not None else ", in-batch negatives"))
    manifest = be_training.finetune(examples, p, layout.biencoder, meta={"dataset": ds.name, "ranker_qids": ranker_qids},
                                    progress=run.progress and not quiet)
    log(f"model: {layout.biencoder_model} ({manifest['steps']} steps, {manifest['train_seconds']:.0f}s on "
        f"{manifest['hardware']})")
    return manifest
