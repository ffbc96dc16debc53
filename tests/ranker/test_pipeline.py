"""retrieve -> features -> train -> evaluate -> report on a generated dataset (BM25 only: seconds)."""

import json

import pytest

from ranker.cli import main

def check_run_files(result, run):
    """Every ranking in the table is a TREC file that an external evaluator scores the same."""
    import ir_measures

    from retrieval.data import load_beir

    qrels = load_beir(json.loads((run / "model" / "manifest.json").read_text())["dataset"]).split("test")[1]
    qrels = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    assert set(result["run_files"]) == set(result["means"]) >= {"first stage", "lambdamart", "bm25 alone",
                                                               "lambdamart[first_stage_only]"}
    for name, path in result["run_files"].items():
        external = ir_measures.read_trec_run(path)
        got = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.AP], qrels, external)
        assert got[ir_measures.nDCG @ 10] == pytest.approx(result["means"][name]["nDCG@10"], abs=1e-9), name
        assert got[ir_measures.AP] == pytest.approx(result["means"][name]["AP"], abs=1e-9), name


def test_full_pipeline(generated, capsys):
    config, run = generated
    for step in ("retrieve", "features", "train"):
        argv = [step, "--config", str(config)] + (["--quiet"] if step == "features" else [])
        assert main(argv) == 0, capsys.readouterr().err
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert [f["name"] for f in manifest["features"]] == ["fs_rank", "fs_score", "bm25", "coverage", "doc_len",
                                                         "query_len", "len_ratio"]
    assert all(f["version"] for f in manifest["features"]) and manifest["train_queries"] > 10
    assert (run / "model-first_stage_only" / "model.txt").exists()

    capsys.readouterr()
    assert main(["evaluate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "| lambdamart |" in out and "| first stage |" in out and "| bm25 alone |" in out
    assert "best baseline, chosen on the training split:" in out and "Holm p=" in out
    result = json.loads((run / "eval" / "test" / "ranker.json").read_text())
    assert set(result["per_query"]["lambdamart"]) == {f"q{i}" for i in range(22, 32)}
    check_run_files(result, run)

    assert main(["report", "--config", str(config), "--query", "q25"]) == 0
    report = json.loads((run / "report" / "importance.json").read_text())
    assert report["explain"]["qid"] == "q25" and {r["feature"] for r in report["features"]} >= {"bm25", "coverage"}
    assert all(r["s_per_1000_pairs"] is not None for r in report["features"])
    assert (run / "report" / "shap_summary.png").exists()


def test_leakage_guard_keeps_cross_encoder_training_queries_from_the_ranker(generated, tmp_path, capsys):
    config, run = generated
    ce = tmp_path / "ce"
    (ce / "model").mkdir(parents=True)
    trained = ["q0", "q1", "q2", "q3"]
    (ce / "manifest.json").write_text(json.dumps({"data": {"train_qids": trained}}))
    text = config.read_text().replace(
        "[features.extractors.length]\n",
        f'[features.extractors.length]\n[features.extractors.crossencoder]\nmodel = "{ce / "model"}"\ntop_n = 0\n')
    config.write_text(text)
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    out = capsys.readouterr().out
    assert "skipping 4 queries a fine-tuned model of this run learned from" in out
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["leaked_queries_excluded"] == 4
    from features.store import FeatureStore

    with FeatureStore(run / "features.duckdb", read_only=True) as store:
        built = set(store.sql("SELECT DISTINCT qid FROM features")["qid"])
    assert built and not built & set(trained)

    (ce / "manifest.json").write_text(json.dumps({"data": {"train_qids": ["q30"]}}))  # a test query
    assert main(["train", "--config", str(config)]) == 2
    assert "was trained on 1 test query" in capsys.readouterr().err


def test_a_variant_with_its_own_settings_is_trained_with_them(tmp_path, capsys):
    from ranker.lambdamart import LambdaMART
    from tests.ranker.conftest import RANKER, generated_dataset, write_config

    config = tmp_path / "v.toml"
    write_config(config, generated_dataset(tmp_path / "gen"), tmp_path / "run",
                 extractors="[features.extractors.bm25]\n[features.extractors.length]",
                 ranker=RANKER + """
[ranker.variants]
plain = ["bm25", "doc_len"]
[ranker.variants.small]
features = ["bm25", "doc_len"]
params = { num_leaves = 2, n_estimators = 5, early_stopping_rounds = 0 }""")
    for step in ("retrieve", "features", "train", "evaluate"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0, \
            capsys.readouterr().err
    main_model, plain, small = (LambdaMART.load(tmp_path / "run" / m) for m in ("model", "model-plain", "model-small"))
    assert main_model.num_leaves == plain.num_leaves == 7 and plain.n_estimators == 40
    assert (small.num_leaves, small.n_estimators, small.min_data_in_leaf) == (2, 5, 5)  # the rest: [ranker.params]
    result = json.loads((tmp_path / "run" / "eval" / "test" / "ranker.json").read_text())
    assert {"lambdamart[plain]", "lambdamart[small]"} <= set(result["means"])


def test_title_queries_on_a_collection_without_titles_are_refused_by_name(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from ranker.training.crossencoder import CETrainingParams
    from ranker.steps.finetune import title_groups
    from retrieval.errors import UsageError

    corpus = pd.DataFrame({"docno": ["a", "b"], "title": ["", "Two words"], "text": ["Body A.", "Body B."]})
    run = SimpleNamespace(cfg=SimpleNamespace(finetune=SimpleNamespace(params=CETrainingParams(title_queries=10))),
                          dataset=SimpleNamespace(corpus=corpus, name="notitles"), layout=None)
    with pytest.raises(UsageError, match="title_queries = 10: no document of notitles has a title of 3 or more words"):
        title_groups(run, 10)
