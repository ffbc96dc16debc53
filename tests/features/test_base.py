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
    with pytest.raises(ConfigError, match=r"unknown key 'features.length.topn' in \[features.length\]; allowed keys: batch_size, top_n"):
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
