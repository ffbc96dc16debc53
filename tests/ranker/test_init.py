"""`fusion-ltr init` writes a config for a user's own data that `fusion-ltr run` completes."""

import pytest

from ranker.cli import main
from ranker.config import load_config
from retrieval.errors import MissingInputError
from tests.conftest import write_beir

# A collection of another domain than the demo's (home cooking, with dated documents): a relevant recipe per
# dish, and two others that share one of its words.
DISHES = ["tomato basil soup", "lemon garlic chicken", "mushroom risotto rice", "chocolate chip cookies",
          "banana walnut bread", "spinach feta pie", "ginger beef noodles", "pumpkin spice pancakes",
          "coconut curry lentils", "apple cinnamon crumble", "honey mustard salmon", "potato leek gratin",
          "cherry almond tart", "sweet corn chowder", "black bean tacos", "maple pecan granola"]


def cooking(folder):
    docs, queries, qrels = [], [], {"train": [], "test": []}
    for i, dish in enumerate(DISHES):
        a, b, c = dish.split()
        docs.append({"_id": f"r{i}", "title": dish.title(), "text": f"How to cook {dish}: {a} with {b} and {c}, "
                     f"simmered slowly. Serve the {c} warm.", "metadata": {"date": f"20{10 + i % 12}-03-01"}})
        docs.append({"_id": f"x{i}", "title": "", "text": f"A note on {a} storage and {a} prices at the market."})
        docs.append({"_id": f"y{i}", "title": "", "text": f"{c.capitalize()} history: where {c} comes from."})
        queries.append({"_id": f"q{i}", "text": f"recipe for {dish}"})
        qrels["train" if i < 11 else "test"].append((f"q{i}", f"r{i}", 1))
    return write_beir(folder, docs=docs, queries=queries, qrels=qrels)


def test_init_writes_a_short_commented_config_with_safe_defaults(tmp_path, capsys, monkeypatch):
    """(tests/test_readme.py runs the README's `init` and `run` on this collection end to end.)"""
    monkeypatch.chdir(tmp_path)
    data = cooking(tmp_path / "cooking")
    assert main(["init", str(data)]) == 0
    out = capsys.readouterr().out
    config = tmp_path / "configs" / "cooking.toml"
    assert f"fusion-ltr run --config {config.relative_to(tmp_path)}" in out
    text = config.read_text()
    assert len(text.splitlines()) < 80 and text.count("#") >= 10  # short, and says why
    cfg = load_config(config)
    assert cfg.ranker.auto and cfg.ranker.guard == "fallback" and cfg.ranker.budget_ms > 0
    assert len(cfg.ranker.cascade) == 2 and "freshness" in cfg.features.extractors  # the documents are dated
    assert cfg.dataset.splits == ("train", "test") and cfg.run.dir == "runs/cooking"
    assert cfg.features.extractors["crossencoder"]["model"] == "runs/cooking/crossencoder/model"
    assert main(["init", str(data)]) == 2  # an existing config is not replaced without --force
    assert main(["init", str(data), "--force", "--budget-ms", "500"]) == 0
    assert load_config(config).ranker.budget_ms == 500


def test_init_with_one_judged_split_cross_validates_and_without_qrels_says_what_is_missing(tmp_path):
    data = cooking(tmp_path / "one")
    (data / "qrels" / "train.tsv").unlink()
    out = tmp_path / "one.toml"
    assert main(["init", str(data), "--output", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.dataset.splits == ("test",) and cfg.ranker.cv_folds == 5 and not cfg.ranker.cascade
    assert "crossencoder" not in cfg.features.extractors
    (data / "qrels" / "test.tsv").unlink()
    from ranker.init import write_config

    with pytest.raises(MissingInputError, match="no qrels"):
        write_config(data, tmp_path / "none.toml")


def test_init_detects_chinese_text_and_configures_its_analysis(tmp_path, capsys):
    from tests.ranker.conftest import generated_dataset_zh

    data = generated_dataset_zh(tmp_path / "zh")
    out = tmp_path / "zh.toml"
    assert main(["init", str(data), "--output", str(out)]) == 0
    assert "language zh" in capsys.readouterr().out
    assert 'language = "zh"   # detected' in out.read_text()
    cfg = load_config(out)
    assert cfg.dataset.language == "zh" and cfg.retrieval.bm25.segmenter == "jieba"
    assert cfg.features.candidates == "bm25" and cfg.features.extractors["first_stage"]["retrievers"] == ["dense"]
    assert "rank_bm25" not in cfg.ranker.cascade[0].features
    english = tmp_path / "en.toml"
    assert main(["init", str(cooking(tmp_path / "cooking")), "--output", str(english)]) == 0
    assert "language" not in english.read_text() and load_config(english).features.candidates == "hybrid"
