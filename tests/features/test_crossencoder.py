import numpy as np
import pandas as pd
import pytest

from features.crossencoder import CrossEncoderExtractor, windows
from tests.features.conftest import make_crossencoder


def pairs(rows):
    return pd.DataFrame({"qid": [r[0] for r in rows], "query": [r[1] for r in rows],
                         "docno": [f"d{i}" for i in range(len(rows))], "title": "", "text": [r[2] for r in rows]})


ROWS = [("q1", "what is a cat", "A cat is a small domesticated feline."),
        ("q1", "what is a cat", "Bread is made of flour, water and yeast. " * 20),
        ("q2", "qubits", "Quantum computers use qubits."),
        ("q2", "qubits", ""),
        ("q3", "dogs barking at night in the city", "Dogs bark."),
        ("q3", "dogs barking at night in the city", "Some " * 200)]


def test_scores_do_not_depend_on_batch_order_or_size(tiny_crossencoder):
    frame = pairs(ROWS)
    reference = CrossEncoderExtractor(model=tiny_crossencoder, model_batch_size=1).compute(frame)["ce_score"]
    for bs in (2, 3, 32):
        got = CrossEncoderExtractor(model=tiny_crossencoder, model_batch_size=bs).compute(frame)["ce_score"]
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(ROWS))
    shuffled = CrossEncoderExtractor(model=tiny_crossencoder, model_batch_size=4).compute(frame.iloc[perm])
    np.testing.assert_allclose(shuffled["ce_score"], reference[perm], rtol=1e-4, atol=1e-5)
    assert len(set(np.round(reference, 5))) > 1  # the scores are not all the same


def test_windows_by_hand():
    text = " ".join(f"w{i}" for i in range(10))
    assert windows(text, 4, 3) == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert windows(text, 4, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w6 w7 w8 w9"]  # the tail is covered
    assert windows("short text", 4, 2) == ["short text"]


def test_maxp_is_the_best_window_of_the_body_each_after_the_title(tiny_crossencoder):
    doc = " ".join(f"word{i}" for i in range(30))
    frame = pairs([("q", "word7 word8", doc)]).assign(title="Cats and dogs")
    ext = CrossEncoderExtractor(model=tiny_crossencoder, maxp=True, window_words=10, stride_words=5)
    got = ext.compute(frame)["ce_score"][0]
    per_window = ext.score(["word7 word8"] * 5, [f"Cats and dogs {w}" for w in windows(doc, 10, 5)])
    assert got == pytest.approx(per_window.max()) and len(per_window) == 5
    untitled = ext.compute(frame.assign(title=""))["ce_score"][0]
    assert untitled == pytest.approx(ext.score(["word7 word8"] * 5, windows(doc, 10, 5)).max())
    # MaxP values have their own code version; plain values keep the extractor's
    plain = CrossEncoderExtractor(model=tiny_crossencoder)
    assert plain.version.startswith(CrossEncoderExtractor.CODE_VERSION + ".")
    assert ext.version.startswith(CrossEncoderExtractor.MAXP_CODE_VERSION + ".")
    with pytest.raises(ValueError, match="stride_words"):
        CrossEncoderExtractor(model=tiny_crossencoder, maxp=True, window_words=5, stride_words=6)


def test_a_missing_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ext = CrossEncoderExtractor(model=str(tmp_path / "runs" / "crossencoder" / "model"))
    with pytest.raises(FileNotFoundError, match="fusion-ltr finetune-ce"):
        ext.compute(pairs(ROWS[:1]))


def test_int8_quantization_keeps_the_values_within_tolerance_and_has_its_own_version(tiny_crossencoder):
    from scipy import stats

    frame = pairs(ROWS)
    fp32 = CrossEncoderExtractor(model=tiny_crossencoder, device="cpu")
    int8 = CrossEncoderExtractor(model=tiny_crossencoder, device="cpu", quantize="int8")
    a, b = fp32.compute(frame)["ce_score"], int8.compute(frame)["ce_score"]
    # the stated tolerance: every value within 35% of the fp32 scores' range and Spearman's rho >= 0.8
    # (this tiny model's head is untrained, its scores span only ~0.05; on the demo's fine-tuned
    # cross-encoder, 300 SciFact pairs: max |diff| 22% of the range, rho 0.97; BENCHMARKS.md)
    assert np.abs(a - b).max() <= 0.35 * np.ptp(a)
    assert stats.spearmanr(a, b).statistic >= 0.8
    assert int8.version != fp32.version  # quantized values never mix with fp32 ones in the store
    assert CrossEncoderExtractor(model=tiny_crossencoder, device="cpu", quantize="none").version == fp32.version
    with pytest.raises(ValueError, match="quantize: expected 'none' or 'int8'"):
        CrossEncoderExtractor(model=tiny_crossencoder, quantize="fp8")


def cross_fitted(folder, models_and_qids):
    """A cross-fitted model folder by hand: fold models (copies) with the queries each learned from."""
    import json
    import shutil

    names = []
    for i, (model, qids) in enumerate(models_and_qids):
        fold = folder / f"fold-{i}"
        shutil.copytree(model, fold / "model")
        (fold / "manifest.json").write_text(json.dumps({"data": {"train_qids": qids}}))
        names.append(f"../fold-{i}/model")
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "cross_fit.json").write_text(json.dumps({"folds": names}))
    return str(folder / "model")


@pytest.fixture(scope="module")
def second_crossencoder(tmp_path_factory):
    """Another tiny cross-encoder: the same body, another seeded head."""
    return make_crossencoder(tmp_path_factory.mktemp("ce2"), 1)


def test_a_cross_fitted_model_scores_each_query_with_the_folds_that_never_saw_it(tiny_crossencoder,
                                                                                  second_crossencoder, tmp_path):
    frame = pairs(ROWS)
    a = CrossEncoderExtractor(model=tiny_crossencoder).compute(frame)["ce_score"]
    b = CrossEncoderExtractor(model=second_crossencoder).compute(frame)["ce_score"]
    assert np.abs(a - b).min() > 1e-4  # the two folds disagree on every pair, so the routing shows
    ext = CrossEncoderExtractor(model=cross_fitted(tmp_path / "xfit", [(tiny_crossencoder, ["q1"]),
                                                                       (second_crossencoder, ["q2"])]))
    got = ext.compute(frame)["ce_score"]
    q = frame["qid"].to_numpy()
    np.testing.assert_allclose(got[q == "q1"], b[q == "q1"], rtol=1e-4, atol=1e-5)  # fold a saw q1: fold b's
    np.testing.assert_allclose(got[q == "q2"], a[q == "q2"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[q == "q3"], (a[q == "q3"] + b[q == "q3"]) / 2, rtol=1e-4, atol=1e-5)
    assert ext.trained_qids() == set()  # no query is scored by a model that saw it: the ranker keeps all

    # a query both folds learned from is not scored, and the leakage exclusion keeps it from the ranker
    both = CrossEncoderExtractor(model=cross_fitted(tmp_path / "overlap", [(tiny_crossencoder, ["q1"]),
                                                                           (second_crossencoder, ["q1", "q2"])]))
    got = both.compute(frame)["ce_score"]
    assert np.isnan(got[q == "q1"]).all() and not np.isnan(got[q != "q1"]).any()
    assert both.trained_qids() == {"q1"}


def test_a_cross_fitted_models_version_follows_its_folds_weights(tiny_crossencoder, second_crossencoder, tmp_path):
    import shutil

    xfit = cross_fitted(tmp_path / "xfit", [(tiny_crossencoder, ["q1"]), (second_crossencoder, ["q2"])])
    before = CrossEncoderExtractor(model=xfit).version
    assert before != CrossEncoderExtractor(model=tiny_crossencoder).version
    shutil.copytree(tiny_crossencoder, tmp_path / "xfit" / "fold-1" / "model", dirs_exist_ok=True)  # retrained fold
    assert CrossEncoderExtractor(model=xfit).version != before
    shutil.rmtree(tmp_path / "xfit" / "fold-1")
    with pytest.raises(FileNotFoundError, match="fold models that do not exist"):
        CrossEncoderExtractor(model=xfit).compute(pairs(ROWS[:1]))


def test_a_folder_without_a_classification_head_is_refused_unless_meant(tiny_crossencoder):
    from retrieval.models import resolve_model
    from retrieval.params import ConfigError

    frame = pairs([("q1", "coffee", "coffee beans"), ("q1", "coffee", "a chess opening")])
    bi_encoder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")  # a bi-encoder named by mistake
    with pytest.raises(ConfigError, match=r"its checkpoint has no weights for \['classifier.weight', "
                                          r"'classifier.bias'\], so they were newly initialised"):
        CrossEncoderExtractor(model=bi_encoder, device="cpu").compute(frame)
    meant = CrossEncoderExtractor(model=bi_encoder, device="cpu", new_head=True)
    assert len(meant.compute(frame)["ce_score"]) == 2
    assert meant.version == CrossEncoderExtractor(model=bi_encoder, device="cpu").version  # it changes no value
    assert len(CrossEncoderExtractor(model=tiny_crossencoder, device="cpu").compute(frame)["ce_score"]) == 2
