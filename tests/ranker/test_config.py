from pathlib import Path

import pytest

from ranker.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_defaults_and_values(tmp_path):
    cfg = load_config(write(tmp_path, '[retrieval]\nk = 50\n[retrieval.bm25]\nk1 = 1\n'))
    assert cfg.retrieval.k == 50 and cfg.retrieval.bm25.k1 == 1.0 and cfg.retrieval.bm25.b == 0.4
    assert cfg.retrieval.systems == ("bm25", "dense", "hybrid")


def test_unknown_top_level_key_lists_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'retreival' in the top level; allowed keys: compute, dataset, evaluate, features, finetune, finetune_biencoder, labels, ranker, retrieval, run"):
        load_config(write(tmp_path, "[retreival]\nk = 5\n"))


def test_unknown_nested_key_lists_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'retrieval.bm25.k3' in \[retrieval.bm25\]; allowed keys: b, k1, method, segmenter, stemmer, stopwords"):
        load_config(write(tmp_path, "[retrieval.bm25]\nk3 = 5\n"))


def test_wrong_type_names_key_and_types(tmp_path):
    with pytest.raises(ConfigError, match=r"retrieval.k: expected int, found str '100'"):
        load_config(write(tmp_path, '[retrieval]\nk = "100"\n'))
    with pytest.raises(ConfigError, match=r"dataset.splits: expected a list"):
        load_config(write(tmp_path, '[dataset]\nsplits = "test"\n'))


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match=r"retrieval.systems has unknown \['splade'\]"):
        load_config(write(tmp_path, '[retrieval]\nsystems = ["bm25", "splade"]\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[retrieval\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_feature_extractor_tables_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match="unknown extractor 'bm52'; registered:"):
        load_config(write(tmp_path, "[features.extractors.bm52]\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'features.extractors.bm25.k3' in \[features.extractors.bm25\]; allowed keys: b, batch_size, k1"):
        load_config(write(tmp_path, "[features.extractors.bm25]\nk3 = 1\n"))
    with pytest.raises(ConfigError, match="features.candidates = 'bm25x' is not one of"):
        load_config(write(tmp_path, '[features]\ncandidates = "bm25x"\n'))


def test_ranker_params_auto_guard_and_compute_are_checked(tmp_path):
    assert load_config(write(tmp_path, "[ranker]\n")).ranker.auto  # the default for a config without a table
    assert not load_config(write(tmp_path, "[ranker.params]\nnum_leaves = 7\n")).ranker.auto
    with pytest.raises(ConfigError, match=r"ranker.params: expected a table or one of 'auto', found str 'tuned'"):
        load_config(write(tmp_path, '[ranker]\nparams = "tuned"\n'))
    with pytest.raises(ConfigError, match=r"ranker.guard: expected one of 'fallback', 'blend', 'warn', found 'off'"):
        load_config(write(tmp_path, '[ranker]\nguard = "off"\n'))
    with pytest.raises(ConfigError, match=r"compute.engine: expected one of 'local', 'dask', found 'ray'"):
        load_config(write(tmp_path, '[compute]\nengine = "ray"\n'))


def test_a_cascade_stage_carries_its_own_settings(tmp_path):
    stages = """[ranker.params]
num_leaves = 15
learning_rate = 0.05
[[ranker.cascade]]
features = ["bm25"]
keep = 5
params = { num_leaves = 4, early_stopping_rounds = 0 }
[[ranker.cascade]]
features = ["coverage"]
"""
    r = load_config(write(tmp_path, stages)).ranker
    first = r.stage_params(0)
    assert (first.num_leaves, first.early_stopping_rounds, first.learning_rate) == (4, 0, 0.05)  # the rest kept
    assert r.stage_params(1) is None  # the ranker's settings
    with pytest.raises(ConfigError, match=r"c.toml: unknown key 'ranker.cascade\[0\].params.leaves'.*allowed keys: .*num_leaves"):
        load_config(write(tmp_path, stages.replace("num_leaves = 4", "leaves = 4")))
    with pytest.raises(ConfigError, match=r"c.toml: .*num_leaves"):
        load_config(write(tmp_path, stages.replace("num_leaves = 4", "num_leaves = 0")))


def test_a_variant_table_carries_its_own_settings(tmp_path):
    cfg = load_config(write(tmp_path, """[ranker.params]
num_leaves = 15
learning_rate = 0.05
[ranker.variants]
plain = ["bm25"]
[ranker.variants.small]
features = ["bm25", "doc_len"]
params = { num_leaves = 4, early_stopping_rounds = 0 }
"""))
    r = cfg.ranker
    assert r.variant_features("plain") == ["bm25"] and r.variant_params("plain") is None
    small = r.variant_params("small")
    assert r.variant_features("small") == ["bm25", "doc_len"]
    assert (small.num_leaves, small.early_stopping_rounds, small.learning_rate) == (4, 0, 0.05)  # the rest kept
    with pytest.raises(ConfigError, match=r"unknown key 'ranker.variants.bad.params.leaves'.*allowed keys: .*num_leaves"):
        load_config(write(tmp_path, '[ranker.variants.bad]\nfeatures = ["bm25"]\nparams = { leaves = 4 }\n'))
    with pytest.raises(ConfigError, match=r"ranker.variants.bad: a table needs features = \[...\].*found keys \['feats'\]"):
        load_config(write(tmp_path, '[ranker.variants.bad]\nfeats = ["bm25"]\n'))
    with pytest.raises(ConfigError, match=r"ranker.variants.bad: expected a list of features or a table, found 'bm25'"):
        load_config(write(tmp_path, '[ranker.variants]\nbad = "bm25"\n'))


@pytest.mark.parametrize("text, message", [
    ("", r"the config is empty"),
    ("# only a comment\n", r"the config is empty"),
    ("[ranker.params]\nlearning_rate = nan\n", r"ranker.params.learning_rate: expected a finite number > 0, found nan"),
    ("[ranker.params]\nn_estimators = -3\n", r"ranker.params.n_estimators: expected a finite number >= 1, found -3"),
    ("[ranker.params]\nfeature_fraction = 1.5\n", r"ranker.params.feature_fraction: expected .* <= 1, found 1.5"),
])
def test_configs_that_used_to_start_or_fail_late_are_refused_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_language_fills_the_analysis_of_every_component_that_does_not_set_its_own(tmp_path):
    cfg = load_config(write(tmp_path, """
[dataset]
language = "zh"
[features.extractors.bm25]
[features.extractors.coverage]
segmenter = "bigrams"
[features.extractors.length]
[features.extractors.lm_likelihood]
[features.extractors.biencoder]
"""))
    bm25 = cfg.retrieval.bm25
    assert (bm25.segmenter, bm25.stemmer, bm25.stopwords) == ("jieba", None, "zh")
    tables = cfg.features.extractors
    assert tables["bm25"] == {"segmenter": "jieba", "stemmer": None, "stopwords": "zh"}
    assert tables["coverage"] == {"segmenter": "bigrams", "stemmer": None, "stopwords": "zh"}  # its own wins
    assert tables["length"] == {"segmenter": "jieba"}  # only the keys a component has
    assert tables["lm_likelihood"] == {"language": "zh"} and tables["biencoder"] == {}
    # with no extractor tables, the default feature set gets the language too
    default = load_config(write(tmp_path, '[dataset]\nlanguage = "zh"\n')).features.extractors
    assert default["bm25"]["segmenter"] == "jieba" and default["first_stage"] == {}
    # English is the default and leaves every table as written
    assert load_config(write(tmp_path, "[features.extractors.bm25]\n")).features.extractors == {"bm25": {}}


def test_an_unknown_language_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.language: expected one of 'en', 'zh', found 'fr'"):
        load_config(write(tmp_path, '[dataset]\nlanguage = "fr"\n'))
