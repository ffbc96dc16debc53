"""``fusion-ltr retrieve``: index the corpus and write each configured system's TREC runs."""

from __future__ import annotations

import json

import pandas as pd

from retrieval import FirstStage, write_trec_run
from retrieval.analysis import language_warning
from retrieval.frames import QID, doc_text

from ..layout import replaced_atomically


def retrieve(run, split: list[str] | None = None) -> dict:
    """Index the corpus with the configured first stage and write a TREC run per system and split."""
    run.builds_features("retrieve")
    cfg, layout, log = run.cfg, run.layout, run.log
    run.folder()
    ds = run.dataset
    splits = list(split or cfg.dataset.splits)
    queries = pd.concat([ds.split(s)[0] for s in splits]).drop_duplicates(QID)
    if "bm25" in cfg.retrieval.members:
        warning = language_warning(doc_text(ds.corpus.head(1000)), cfg.retrieval.bm25.segmenter)
        if warning:
            log(f"warning: {warning}")
    first_stage = FirstStage(cfg.retrieval, cache=cfg.run.cache).index(ds.corpus)
    runs = first_stage.retrieve(queries)
    timing = first_stage.timing_
    manifest = {"dataset": ds.name, "n_docs": len(ds.corpus), "splits": splits, "n_queries": len(queries),
                **cfg.retrieval.to_dict(), "timing": timing}
    # both folders are put in place only when whole: an interrupted retrieve leaves the previous ones
    with replaced_atomically(layout.index) as index, replaced_atomically(layout.retrieval, keep=True) as out:
        first_stage.save(index)
        ds.corpus.to_parquet(index / layout.corpus.name, index=False)  # the Scorer's `search` reads it
        for system, frame in runs.items():
            for s in splits:
                split_q = set(ds.split(s)[0][QID])
                write_trec_run(frame[frame[QID].isin(split_q)], out / layout.retrieval_trec(system, s).name)
        (out / layout.retrieval_manifest.name).write_text(json.dumps(manifest, indent=2))
    for key, value in timing.items():
        log(f"  {key}: {value:.1f}" if isinstance(value, float) else f"  {key}: {value}")
    for system in runs:
        if timing.get(f"{system}_queries_without_candidates"):
            log(f"warning: {timing[f'{system}_queries_without_candidates']} of {len(queries)} queries got no "
                f"candidate from {system}: their rankings are empty")
    log(f"wrote {len(runs)} run(s) x {len(splits)} split(s) to {layout.retrieval}")
    return manifest
