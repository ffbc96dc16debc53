"""``fusion-ltr retrieve``: index the corpus and write each configured system's TREC runs."""

from __future__ import annotations

import json

import pandas as pd

from retrieval import FirstStage, write_trec_run
from retrieval.frames import QID


def retrieve(run, split: list[str] | None = None) -> dict:
    """Index the corpus with the configured first stage and write a TREC run per system and split."""
    run.builds_features("retrieve")
    cfg, layout, log = run.cfg, run.layout, run.log
    run.folder()
    ds = run.dataset
    splits = list(split or cfg.dataset.splits)
    queries = pd.concat([ds.split(s)[0] for s in splits]).drop_duplicates(QID)
    first_stage = FirstStage(cfg.retrieval, cache=cfg.run.cache).index(ds.corpus)
    first_stage.save(layout.index)
    runs = first_stage.retrieve(queries)
    layout.index.mkdir(parents=True, exist_ok=True)
    ds.corpus.to_parquet(layout.corpus, index=False)  # the Scorer's `search` reads it
    for system, frame in runs.items():
        for s in splits:
            split_q = set(ds.split(s)[0][QID])
            write_trec_run(frame[frame[QID].isin(split_q)], layout.retrieval_run(system, s))
    timing = first_stage.timing_
    manifest = {"dataset": ds.name, "n_docs": len(ds.corpus), "splits": splits, "n_queries": len(queries),
                **cfg.retrieval.to_dict(), "timing": timing}
    layout.retrieval_manifest.write_text(json.dumps(manifest, indent=2))
    for key, value in timing.items():
        log(f"  {key}: {value:.1f}" if isinstance(value, float) else f"  {key}: {value}")
    log(f"wrote {len(runs)} run(s) x {len(splits)} split(s) to {layout.retrieval}")
    return manifest
