"""The CLI end to end on a tiny BEIR dataset written by the test (real BM25 and the packaged MiniLM)."""

import json
import subprocess
import sys

import pytest

from ranker.cli import main
from retrieval.data import read_trec_run


@pytest.fixture
def config(tiny_beir, tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(
        f'[dataset]\nname = "{tiny_beir}"\nsplits = ["train", "test"]\n'
        f'[retrieval]\nk = 3\ndepth = 5\n'
        f'[run]\ndir = "{tmp_path / "run"}"\ncache = "{tmp_path / "cache"}"\n'
    )
    return path


def test_retrieve_then_evaluate(config, tmp_path, capsys):
    assert main(["retrieve", "--config", str(config)]) == 0
    run_dir = tmp_path / "run"
    for system in ("bm25", "dense", "hybrid"):
        for split, qids in (("train", {"q1", "q2"}), ("test", {"q3", "q4"})):
            run = read_trec_run(run_dir / "retrieval" / f"{system}.{split}.trec")
            assert set(run["qid"]) <= qids and run.groupby("qid").size().max() <= 3
    assert (run_dir / "index" / "bm25" / "params.json").exists()
    assert (run_dir / "config.toml").exists()

    assert main(["evaluate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "| system | nDCG@10 | RR@10 | R@100 | AP |" in out and "hybrid vs bm25" in out
    metrics = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    assert set(metrics["means"]) == {"bm25", "dense", "hybrid"} and metrics["n_queries"] == 2
    assert metrics["means"]["bm25"]["RR@10"] == 1.0  # each test query's relevant doc is its only BM25 match
    assert set(metrics["per_query"]["hybrid"]) == {"q3", "q4"}


def test_evaluate_before_retrieve_says_what_to_run(config, capsys):
    assert main(["evaluate", "--config", str(config)]) == 2
    assert "run `fusion-ltr retrieve --config" in capsys.readouterr().err


def test_config_error_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[retrieval]\ntop_k = 3\n")
    assert main(["retrieve", "--config", str(bad)]) == 2
    assert "unknown key 'retrieval.top_k'" in capsys.readouterr().err


def test_python_dash_m_ranker_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "ranker", "--help"], capture_output=True, text=True, check=True).stdout
    assert "retrieve" in out and "evaluate" in out and "data" in out


def test_features_build_then_rerun_computes_nothing(config, tmp_path, capsys):
    text = config.read_text() + (
        '[features]\n[features.extractors.first_stage]\n[features.extractors.bm25]\n[features.extractors.coverage]\n'
        '[features.extractors.length]\n[features.extractors.biencoder]\n'
        f'cache = "{tmp_path / "cache"}"\n'
        '[features.extractors.freshness]\nreference_time = "1980-01-01"\nhalf_life_days = 365\n')
    config.write_text(text)
    assert main(["retrieve", "--config", str(config)]) == 0
    assert main(["features", "--config", str(config), "--quiet"]) == 0
    first = json.loads((tmp_path / "run" / "features" / "manifest.json").read_text())
    computed = {r["extractor"]: r["computed"] for r in first["reports"]}
    n_pairs = first["reports"][0]["pairs"]
    assert n_pairs > 0 and all(v == n_pairs for v in computed.values())
    out = capsys.readouterr().out
    assert "age_days" in out and "s_per_1000_pairs" in out

    assert main(["features", "--config", str(config), "--quiet"]) == 0
    second = json.loads((tmp_path / "run" / "features" / "manifest.json").read_text())
    recomputed = {r["extractor"]: r["computed"] for r in second["reports"]}
    assert recomputed == {"first_stage": n_pairs, "bm25": 0, "coverage": 0, "length": 0, "biencoder": 0, "freshness": 0}
    assert [f["version"] for f in second["features"]] == [f["version"] for f in first["features"]]

    from features.store import FeatureStore

    with FeatureStore(tmp_path / "run" / "features.duckdb", read_only=True) as store:
        view = store.sql(f"SELECT * FROM {first['sql_view']}")
        assert len(view) == n_pairs and {"bm25", "cosine", "freshness", "has_timestamp"} <= set(view.columns)
        assert view.loc[view["docno"] == "d3", "has_timestamp"].eq(0).all()  # d3 has no date


def test_project_errors_exit_2_and_bugs_keep_their_traceback(config, monkeypatch, capsys):
    from ranker import steps
    from retrieval.errors import UsageError

    def user_error(run, split=None):
        raise UsageError("bad input: expected x, found y")

    def bug(run, split=None):
        raise ZeroDivisionError("a bug")

    step = steps.BY_NAME["retrieve"]
    monkeypatch.setattr(steps, "STEPS", [steps.Step("retrieve", user_error, step.help, step.args)])
    assert main(["retrieve", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == "fusion-ltr retrieve: error: bad input: expected x, found y"
    monkeypatch.setattr(steps, "STEPS", [steps.Step("retrieve", bug, step.help, step.args)])
    with pytest.raises(ZeroDivisionError):
        main(["retrieve", "--config", str(config)])
