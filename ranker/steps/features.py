"""``fusion-ltr features``: build the configured feature set into the store, then summarise it."""

from __future__ import annotations

import json
import shutil
import time

from features.base import ReadsLog
from features.build import build, feature_specs, summary_table
from features.store import FeatureStore
from retrieval.data import read_trec_run


def load_candidates(run, store: FeatureStore, splits: list[str]) -> None:
    """Copy each retriever's TREC runs of ``splits`` into the store's candidates table."""
    for system in run.cfg.retrieval.systems:
        for split in splits:
            path = run.layout.retrieval_trec(system, split)
            if not path.exists():
                raise run.missing(path, "retrieve")
            store.put_candidates(read_trec_run(path).assign(retriever=system))


def save_extractor_state(run, extractors) -> None:
    """The fitted corpus statistics, kept for `train` to save beside the model (no refit there)."""
    folder = run.layout.extractor_state
    shutil.rmtree(folder, ignore_errors=True)
    for ext in extractors:
        if ext.has_corpus_state:
            ext.save_state(folder)


def features(run, split: list[str] | None = None, quiet: bool = False) -> dict:
    """Build the configured feature set for the candidates of ``split`` (default: the config's splits)."""
    run.builds_features("features")
    cfg, layout, log = run.cfg, run.layout, run.log
    t0 = time.perf_counter()
    run.folder()
    splits = list(split or cfg.dataset.splits)
    ds = run.dataset
    candidates = cfg.features.candidates
    with FeatureStore(layout.store) as store:
        store.put_documents(ds.corpus)
        store.put_queries(ds.queries)
        for s in splits:
            store.put_qrels(ds.split(s)[1])
        load_candidates(run, store, splits)
        all_qids = set(run.qids(splits))
        leaked = run.leaked_queries(run.test_qids) & all_qids  # the ranker never learns from these: no features
        qids = sorted(all_qids - leaked)
        if leaked:
            log(f"skipping {len(leaked)} queries a fine-tuned model of this run learned from (the ranker never uses them)")
        pairs = store.pairs(qids, retriever=candidates)
        extractors = run.fitted_extractors
        for ext in extractors:
            if isinstance(ext, ReadsLog):  # this store's log as it is now (its snapshot is saved below)
                ext.read_log(store)
        specs = feature_specs(extractors)  # versions include the fitted corpus statistics
        deferred = {e.name for e in run.deferred}
        if deferred:
            log(f"deferred to the cascade (computed in `train` for the documents that reach their stage): "
                f"{sorted(deferred)}")
        built = [e for e in extractors if e.name not in deferred]
        compute = cfg.compute
        if compute.engine == "dask":
            from features.dask_build import dask_build

            from ..distributed import dask_client

            parts = compute.parts_dir or layout.features / "parts"
            with dask_client(compute) as client:
                log(f"dask: {len(client.scheduler_info()['workers'])} worker(s) at {client.scheduler.address}, "
                    f"{compute.n_partitions} partitions, parts in {parts}")
                reports = dask_build(store, pairs, built, client, parts_dir=parts,
                                     partitions=compute.n_partitions, progress=run.progress and not quiet)
        else:
            reports = build(store, pairs, built, progress=run.progress and not quiet)
        table = summary_table(store, built, reports, qids, retriever=candidates)
        view = store.create_view(ds.name.replace("-", "_"), specs, retriever=candidates)
    save_extractor_state(run, extractors)
    seconds = time.perf_counter() - t0
    layout.features.mkdir(exist_ok=True)
    manifest = {
        "dataset": ds.name, "splits": splits, "candidates": candidates, "store": str(layout.store),
        "features": [{"name": s.name, "version": s.version, "description": s.description, "extractor": e.name}
                     for e in extractors for s in e.specs],
        "extractors": {e.name: e.provenance() for e in extractors},
        "extractor_configs": {e.name: e.config() for e in extractors},
        "sql_view": view, "seconds": seconds, "reports": [vars(r) for r in reports],
    }
    layout.features_manifest.write_text(json.dumps(manifest, indent=2, default=str))
    run.features_changed()  # built anew: read again by the steps after this one
    text = table.to_markdown(index=False, floatfmt=".4g")
    layout.features_summary.write_text(text + "\n")
    log(text)
    log(f"{len(pairs)} candidate pairs, {sum(r.computed for r in reports)} values computed, "
        f"{seconds:.1f}s; SQL view {view} in {layout.store}")
    return manifest
