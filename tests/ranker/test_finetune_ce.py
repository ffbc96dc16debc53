"""The cross-encoder step with cross-fitting: two folds, each learning from one side of the training
queries; the ranker keeps every training query, and each one's ``ce_score`` comes from the fold that never
saw it (checked from the folds' manifests and by scoring with each fold alone); a fold retrained in place
makes `train` refuse the values of the old one."""

import json

import numpy as np
import pytest

from features.model_folders import trained_qids
from ranker.training.crossencoder import split_queries
from features.crossencoder import CrossEncoderExtractor
from features.store import FeatureStore
from ranker.cli import main
from ranker.config import load_config
from ranker.run import Run
from retrieval.data import load_beir
from retrieval.frames import doc_text
from tests.ranker.conftest import RANKER, generated_dataset, write_config

pytest.importorskip("sentence_transformers")


def test_cross_fitted_folds_learn_from_opposite_sides_and_the_ranker_keeps_every_training_query(tmp_path, capsys):
    folder = generated_dataset(tmp_path / "gen")
    run_dir = tmp_path / "run"
    model = run_dir / "crossencoder" / "model"
    config = tmp_path / "gen.toml"
    write_config(config, folder, run_dir, ranker=RANKER, extractors=f"""[features.extractors.bm25]
[features.extractors.crossencoder]
model = "{model}"
max_length = 32
[finetune.params]
negatives = 1
negatives_from = 3
max_length = 32
batch_size = 4
epochs = 1.0
cross_fit = true""")
    for step in ("retrieve", "finetune-ce", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step in ("features", "finetune-ce") else [])) == 0
    out = capsys.readouterr().out
    ds = load_beir(str(folder))
    train_q = set(ds.split("train")[0]["qid"])
    ce_side, ranker_side = split_queries(sorted(train_q), 0.5, 42)
    folds = {f: set(json.loads((run_dir / "crossencoder" / f"fold-{f}" / "manifest.json").read_text())["data"]
                    ["train_qids"]) for f in ("a", "b")}
    assert folds["a"] and folds["a"] <= set(ce_side) and folds["b"] and folds["b"] <= set(ranker_side)
    assert not (folds["a"] | folds["b"]) & set(ds.split("test")[0]["qid"])
    assert trained_qids(model) == set() and "skipping" not in out
    run = Run(load_config(config), log=lambda *a: None)
    assert not run.matrices.leaked  # the ranker learns from every training query
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    assert manifest["leaked_queries_excluded"] == 0

    with FeatureStore(run_dir / "features.duckdb", read_only=True) as store:
        pairs = store.sql("SELECT f.qid, q.query, d.title, d.text, f.value FROM features f JOIN queries q USING (qid) "
                          "JOIN documents d USING (docno) WHERE f.feature = 'ce_score'")
    alone = {f: CrossEncoderExtractor(model=str(run_dir / "crossencoder" / f"fold-{f}" / "model"), max_length=32)
             for f in ("a", "b")}
    for learned_by, scored_by in (("a", "b"), ("b", "a")):
        rows = pairs[pairs["qid"].isin(folds[learned_by])]
        assert len(rows) >= 10
        texts = rows["query"].tolist(), doc_text(rows)
        np.testing.assert_allclose(rows["value"], alone[scored_by].score(*texts), rtol=1e-4, atol=1e-5)
        assert np.abs(rows["value"] - alone[learned_by].score(*texts)).max() > 1e-3  # the folds differ
    test = pairs[pairs["qid"].isin(set(ds.split("test")[0]["qid"]))]  # queries no fold saw: the mean of both
    texts = test["query"].tolist(), doc_text(test)
    np.testing.assert_allclose(test["value"], (alone["a"].score(*texts) + alone["b"].score(*texts)) / 2,
                               rtol=1e-4, atol=1e-5)
    assert main(["finetune-ce", "--config", str(config)]) == 0  # both folds trained with these parameters
    assert "cached" in capsys.readouterr().out

    # a fold retrained in place (here: its config file rewritten) changes ce_score's version: train refuses the
    # values built from the old model until `features` computes them again
    fold_config = run_dir / "crossencoder" / "fold-b" / "model" / "config.json"
    fold_config.write_text(json.dumps({**json.loads(fold_config.read_text()), "retrained": True}))
    assert main(["train", "--config", str(config)]) == 2
    assert "ce_score (crossencoder): built " in capsys.readouterr().err
    assert main(["features", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config)]) == 0
