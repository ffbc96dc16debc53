import numpy as np
import pandas as pd
import pytest

from features import base
from features.length import LengthExtractor
from retrieval.params import ConfigError


def test_registry_creates_by_name_and_validates_params():
    ext = base.create("length", {"top_n": 5})
    assert isinstance(ext, LengthExtractor) and ext.top_n == 5
    with pytest.raises(ConfigError, match="unknown extractor 'lenght'; registered: .*length"):
        base.create("lenght")
    with pytest.raises(ConfigError, match=r"unknown key 'features.length.topn' in \[features.length\]; allowed keys: batch_size, segmenter, top_n"):
        base.create("length", {"topn": 5})


def test_registry_refuses_a_second_registration_of_a_name():
    with pytest.raises(ValueError, match="already registered"):
        base.register("bm25", "somewhere.else:Other")
    base.register("bm25", base.REGISTRY["bm25"])  # the same target again is harmless


def test_every_registered_extractor_imports_and_has_specs():
    for name in base.REGISTRY:
        cls = base.extractor_class(name)
        assert cls.name == name
        specs = cls().specs
        assert specs and all(s.version.startswith(cls.CODE_VERSION + ".") for s in specs)


def test_version_follows_value_parameters_only():
    v = base.create("bm25").version
    assert base.create("bm25", {"k1": 1.2}).version != v
    assert base.create("bm25", {"top_n": 10, "batch_size": 7}).version == v


def test_check_values_names_the_problem():
    ext = LengthExtractor()
    pairs = pd.DataFrame({"x": [1, 2]})
    with pytest.raises(ValueError, match=r"compute returned \['doc_len'\], expected"):
        base.check_values(ext, pairs, {"doc_len": [1, 2]})
    with pytest.raises(ValueError, match=r"length.doc_len: expected 2 values, found shape \(3,\)"):
        base.check_values(ext, pairs, {"doc_len": [1, 2, 3], "query_len": [1, 1], "len_ratio": [1, 1]})
    out = base.check_values(ext, pairs, {"doc_len": [1, 2], "query_len": [1, 1], "len_ratio": [1, 2]})
    assert out["doc_len"].dtype == np.float64


def test_a_local_model_folder_is_versioned_by_its_content(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights v1")
    v1 = base.create("crossencoder", {"model": str(model)}).version
    assert base.create("crossencoder", {"model": str(model)}).version == v1
    (model / "model.safetensors").write_bytes(b"weights v2")  # retrained in place
    assert base.create("crossencoder", {"model": str(model)}).version != v1
    # a hub name has no local content: versioned by its name and parameters only
    assert base.model_fingerprint("cross-encoder/ms-marco-MiniLM-L-6-v2") is None


def test_a_capability_without_its_methods_is_refused_at_class_creation():
    with pytest.raises(TypeError, match=r"Broken lacks trained_qids\(\) \(required by TrainedOnQueries\)"):
        class Broken(base.TrainedOnQueries, base.BaseExtractor):  # noqa: F841 - the class statement is the test
            name, Params, FEATURES = "broken", LengthExtractor.Params, {"x": ""}

            def compute(self, pairs):
                return {"x": np.zeros(len(pairs))}
    with pytest.raises(TypeError, match=r"lacks .*save_state\(\) \(required by CorpusState\), load_state\(\)"):
        class NoState(base.CorpusState, base.BaseExtractor):  # noqa: F841
            name, Params, FEATURES = "nostate", LengthExtractor.Params, {"x": ""}

            def fit(self, corpus):
                return self

            def state(self):
                return {}

            def compute(self, pairs):
                return {"x": np.zeros(len(pairs))}
    with pytest.raises(TypeError, match=r"NoCompute lacks FEATURES, compute\(\)"):
        class NoCompute(base.BaseExtractor):  # noqa: F841
            name, Params = "nocompute", LengthExtractor.Params


def test_the_leakage_guard_asks_every_trained_extractor():
    class Trained(base.TrainedOnQueries, base.BaseExtractor):
        name, Params, FEATURES = "trained", LengthExtractor.Params, {"t": ""}

        def __init__(self, qids):
            super().__init__()
            self.qids = set(qids)

        def trained_qids(self):
            return self.qids

        def compute(self, pairs):
            return {"t": np.zeros(len(pairs))}

    extractors = [LengthExtractor(), Trained(["q1"]), Trained(["q2", "q3"])]
    assert base.trained_qids(extractors) == {"q1", "q2", "q3"}
    assert base.trained_qids([LengthExtractor()]) == set()


def test_the_version_is_computed_once_and_again_after_fit_or_load(tmp_path):
    corpus = pd.DataFrame({"docno": ["a", "b"], "title": ["", ""], "text": ["cats purr", "dogs bark loudly"]})
    ext = base.create("bm25").fit(corpus)
    v = ext.version
    calls = []
    original = ext.state
    ext.state = lambda: calls.append(1) or original()
    assert [ext.version for _ in range(5)] == [v] * 5 and not calls  # cached: no state hashing per lookup
    ext.fit(corpus.assign(text=["cats purr", "cats bark"]))
    assert ext.version != v  # new statistics, new version
    ext.save_state(tmp_path)
    other = base.create("bm25").fit(corpus)
    assert other.version == v
    other.load_state(tmp_path)
    assert other.version == ext.version
