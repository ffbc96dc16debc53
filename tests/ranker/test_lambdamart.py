import numpy as np
import pytest

from features.store import RankingData
from ranker.lambdamart import FeatureMismatchError, LambdaMART
from retrieval.params import ConfigError


def synthetic(n_queries=60, docs=10, seed=0, versions=True):
    """Feature 'signal' decides the label; 'noise' is random."""
    rng = np.random.default_rng(seed)
    qids = np.repeat([f"q{i:03d}" for i in range(n_queries)], docs)
    signal = rng.normal(size=len(qids))
    noise = rng.normal(size=len(qids))
    y = (signal > 0.8).astype(int) + (signal > 1.5).astype(int)
    return RankingData.from_arrays(np.c_[signal, noise], y, qids, feature_names=["signal", "noise"],
                                   feature_versions=["1.a", "1.b"] if versions else None)


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_learns_the_signal_and_saves_loads(backend, tmp_path):
    train, valid, test = synthetic(seed=0), synthetic(20, seed=1), synthetic(20, seed=2)
    model = LambdaMART(backend=backend, n_estimators=50, min_data_in_leaf=5).fit(train, valid)
    scores = model.predict(test)
    starts = np.r_[0, np.cumsum(test.group)[:-1]]
    top_is_best = [test.y[s + np.argmax(scores[s:s + g])] == test.y[s:s + g].max() for s, g in zip(starts, test.group)]
    assert np.mean(top_is_best) >= 0.9
    imp = model.importance("gain")
    assert imp["signal"] > 10 * max(imp["noise"], 1e-9)
    loaded = LambdaMART.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict(test), scores, rtol=1e-6)
    shap = loaded.contributions(test)
    assert shap.shape == (len(test.y), 3)
    np.testing.assert_allclose(shap.sum(axis=1), scores, rtol=1e-4, atol=1e-4)  # TreeSHAP is exact


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_fixed_seed_reproduces_the_model(backend, tmp_path):
    train = synthetic()
    kw = dict(backend=backend, n_estimators=30, feature_fraction=0.5, bagging_fraction=0.7, seed=7)
    a = LambdaMART(**kw).fit(train).save(tmp_path / "a")
    b = LambdaMART(**kw).fit(train).save(tmp_path / "b")
    name = "model.txt" if backend == "lightgbm" else "model.json"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    c = LambdaMART(**{**kw, "seed": 8}).fit(train).save(tmp_path / "c")
    assert (a / name).read_bytes() != (c / name).read_bytes()


def test_groups_are_handled_once_on_a_hand_made_example():
    data = RankingData.from_arrays([[1], [2], [3], [4], [5]], [0, 1, 0, 1, 1], ["b", "a", "b", "c", "a"],
                                   docnos=["b1", "a1", "b2", "c1", "a2"])
    assert data.qids.tolist() == ["a", "a", "b", "b", "c"] and data.group.tolist() == [2, 2, 1]
    assert data.docnos.tolist() == ["a1", "a2", "b1", "b2", "c1"]
    with pytest.raises(TypeError, match="must be RankingData"):
        LambdaMART().fit(data.X, data.y)


def test_manifest_mismatch_is_refused(tmp_path):
    train = synthetic()
    model = LambdaMART.load(LambdaMART(n_estimators=5).fit(train).save(tmp_path / "m"))
    swapped = train.select(["noise", "signal"])
    with pytest.raises(FeatureMismatchError, match="order differs"):
        model.predict(swapped)
    renamed = RankingData(train.X, train.y, train.group, train.qids, train.docnos, ["signal", "bm25"], ["1.a", "1.b"])
    with pytest.raises(FeatureMismatchError, match=r"trained using 2 features .*missing \['noise'\], unexpected \['bm25'\]"):
        model.predict(renamed)
    bumped = RankingData(train.X, train.y, train.group, train.qids, train.docnos, ["signal", "noise"], ["1.a", "2.z"])
    with pytest.raises(FeatureMismatchError, match="noise: trained on 1.b, found 2.z"):
        model.predict(bumped)
    with pytest.raises(FeatureMismatchError, match="trained using 2 features, but found 3"):
        model.predict(np.zeros((4, 3)))


def test_bad_parameters_are_clear():
    with pytest.raises(ConfigError, match="expected one of"):
        LambdaMART(backend="catboost").fit(synthetic())
    with pytest.raises(ConfigError, match="unknown feature"):
        LambdaMART(monotone={"nope": 1}).fit(synthetic())
    with pytest.raises(RuntimeError, match="not fitted"):
        LambdaMART().predict(np.zeros((1, 2)))


def test_monotone_constraint_is_applied():
    data = synthetic()
    model = LambdaMART(n_estimators=30, monotone={"noise": -1}).fit(data)
    grid = np.c_[np.zeros(50), np.linspace(-3, 3, 50)]
    assert np.all(np.diff(model.predict(grid)) <= 1e-12)


def test_parameters_are_declared_once_and_backends_are_registered():
    from dataclasses import asdict

    from ranker.backends import REGISTRY, backend_class
    from ranker.lambdamart import LambdaMARTParams

    assert LambdaMART().get_params() == asdict(LambdaMARTParams())
    assert LambdaMART(num_leaves=3).get_params()["num_leaves"] == 3
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['leaves'\]; allowed: \['backend', "):
        LambdaMART(leaves=3)
    for name in REGISTRY:
        assert backend_class(name).name == name
    with pytest.raises(ConfigError, match=r"expected one of \['lightgbm', 'xgboost'\], found 'catboost'"):
        LambdaMART(backend="catboost").fit(synthetic())


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_a_damaged_model_folder_is_refused_before_loading(backend, tmp_path):
    import json

    from retrieval.errors import FusionLTRError

    model = LambdaMART(backend=backend, n_estimators=20, min_data_in_leaf=5).fit(synthetic())
    folder = model.save(tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    booster = folder / manifest["booster_file"]
    good = booster.read_bytes()

    swapped = dict(manifest, features=manifest["features"][::-1])  # same names, another order
    (folder / "manifest.json").write_text(json.dumps(swapped))
    with pytest.raises(FeatureMismatchError, match=r"lists features \['noise', 'signal'\], but the booster "
                                                   r".* was trained on \['signal', 'noise'\]"):
        LambdaMART.load(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    for frac in (0.05, 0.5, 0.99):  # LightGBM aborts the process on these unless they are caught first
        booster.write_bytes(good[: int(len(good) * frac)])
        with pytest.raises(FusionLTRError, match=rf"{booster.name}: "):
            LambdaMART.load(folder)
    booster.unlink()
    with pytest.raises(FileNotFoundError, match="booster file the manifest names is missing"):
        LambdaMART.load(folder)
    booster.write_bytes(good)
    assert LambdaMART.load(folder).predict(synthetic(5)).shape == (50,)

    (folder / "manifest.json").write_text('{"params": {')
    with pytest.raises(FusionLTRError, match=r"manifest.json: not valid JSON"):
        LambdaMART.load(folder)
    (folder / "manifest.json").write_text(json.dumps({"params": {}, "features": []}))
    with pytest.raises(FusionLTRError, match=r"missing \['booster_file'\]"):
        LambdaMART.load(folder)


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_a_base_score_is_boosted_from_and_added_back(backend):
    """With ``base`` (a previous cascade stage's score) the booster fits on top of it: given a base that
    already ranks perfectly and only noise to add, early stopping keeps the base's order."""
    def with_base(data):
        base = 3.0 * data.y + 0.01 * data.X[:, 0]  # a perfect order of the labels
        return RankingData.from_arrays(data.X[:, [1]], data.y, data.qids, data.docnos, ["noise"], ["1.b"], base)

    train, valid, test = with_base(synthetic(seed=0)), with_base(synthetic(20, seed=1)), with_base(synthetic(20, seed=2))
    assert train.subset(train.unique_qids[:3]).base is not None and train.select(["noise"]).base is train.base
    model = LambdaMART(backend=backend, n_estimators=100, early_stopping_rounds=5, min_data_in_leaf=5).fit(train, valid)
    plain = LambdaMART(backend=backend, n_estimators=100, early_stopping_rounds=5, min_data_in_leaf=5).fit(
        RankingData.from_arrays(train.X, train.y, train.qids, train.docnos, ["noise"], ["1.b"]),
        RankingData.from_arrays(valid.X, valid.y, valid.qids, valid.docnos, ["noise"], ["1.b"]))
    scores = model.predict(test)
    trees = model.predict(test.X)  # the matrix alone: the booster's own part
    np.testing.assert_allclose(scores, trees + test.base)
    np.testing.assert_allclose(model.contributions(test).sum(axis=1) + test.base, scores, rtol=1e-4, atol=1e-4)
    starts = np.r_[0, np.cumsum(test.group)[:-1]]
    top_is_best = [test.y[s + np.argmax(scores[s:s + g])] == test.y[s:s + g].max() for s, g in zip(starts, test.group)]
    assert np.mean(top_is_best) == 1.0  # the noise never outweighs the base
    assert not np.allclose(model.predict(test.X), plain.predict(test.X))  # the base changed what was learned
