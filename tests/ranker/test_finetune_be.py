"""The in-domain bi-encoder step: it learns from the cross-encoder's side of the training queries only,
dense retrieval and `cosine` then use it, and the ranker never learns from its queries (title
pseudo-queries added to its examples take none)."""

import json

import pytest

from ranker.training.crossencoder import split_queries
from ranker.cli import main
from ranker.config import load_config
from ranker.run import Run
from retrieval.data import load_beir
from tests.ranker.conftest import generated_dataset

pytest.importorskip("sentence_transformers")


def test_the_biencoder_never_sees_a_ranker_or_test_query_and_its_queries_are_kept_from_the_ranker(tmp_path):
    folder = generated_dataset(tmp_path / "gen")
    run_dir = tmp_path / "run"
    model = run_dir / "biencoder" / "model"
    config = tmp_path / "gen.toml"
    config.write_text(f"""
[dataset]
name = "{folder}"
[retrieval]
systems = ["bm25", "dense", "hybrid"]
k = 20
depth = 30
[retrieval.dense]
model = "{model}"
[features]
candidates = "hybrid"
[features.extractors.first_stage]
retrievers = ["bm25", "dense"]
[features.extractors.bm25]
[features.extractors.biencoder]
model = "{model}"
cache = "{tmp_path / 'emb'}"
[finetune_biencoder.params]
epochs = 1.0
batch_size = 4
title_queries = 8
[ranker]
guard = "warn"
[ranker.params]
n_estimators = 20
min_data_in_leaf = 5
[run]
dir = "{run_dir}"
cache = "{tmp_path / 'emb'}"
""")
    for step in ("finetune-be", "retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step in ("features", "finetune-be") else [])) == 0
    manifest = json.loads((run_dir / "biencoder" / "manifest.json").read_text())
    ds = load_beir(str(folder))
    train_q = ds.split("train")[0]["qid"]
    ce_side, ranker_side = split_queries(train_q, 0.5, 42)
    learned = set(manifest["data"]["train_qids"])
    # the title pseudo-queries are trained on but are no query of the split: never counted as one
    assert manifest["data"]["title_examples"] > 0
    assert learned and learned <= set(ce_side)
    assert not learned & (set(ranker_side) | set(ds.split("test")[0]["qid"]))
    run = Run(load_config(config), log=lambda *a: None)
    assert set(run.matrices.leaked) == learned  # the ranker never learns from them
    features = json.loads((run_dir / "features" / "manifest.json").read_text())
    assert str(model) in json.dumps(features["extractor_configs"]["biencoder"])  # cosine from the tuned model
    assert main(["finetune-be", "--config", str(config)]) == 0  # trained with these parameters: cached


def test_a_model_trained_before_a_parameter_existed_counts_as_trained_with_its_default(tmp_path):
    import dataclasses

    from ranker.training.biencoder import BETrainingParams
    from ranker.steps.finetune import trained_with

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    old = dataclasses.asdict(BETrainingParams(max_queries=100))
    del old["title_queries"]  # a manifest written before the parameter was added
    (tmp_path / "manifest.json").write_text(json.dumps({"params": old}))
    assert trained_with(tmp_path, BETrainingParams(max_queries=100))
    assert not trained_with(tmp_path, BETrainingParams(max_queries=100, title_queries=5))
    assert not trained_with(tmp_path, BETrainingParams(max_queries=50))
