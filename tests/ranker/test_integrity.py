"""Model folders that cannot lie: checksums verified before a booster is read, calibration required and
validated, on a real (tiny) trained run."""

import json
import logging
import shutil

import pytest

from ranker import Scorer
from ranker.cli import main
from ranker.integrity import IntegrityError
from retrieval.errors import MissingInputError, UsageError
from tests.ranker.conftest import generated_dataset, write_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    config = tmp / "gen.toml"
    write_config(config, generated_dataset(tmp / "gen"), tmp / "run",
                 extractors="[features.extractors.bm25]\n[features.extractors.length]",
                 ranker="[ranker.params]\nn_estimators = 20\nmin_data_in_leaf = 5\nnum_leaves = 5")
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    return tmp / "run" / "model"


@pytest.fixture
def copy(model_dir, tmp_path):
    target = tmp_path / "run" / "model"
    shutil.copytree(model_dir.parent, target.parent, ignore=shutil.ignore_patterns("features", "index"))
    return target


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_train_lists_every_file_with_its_sha256(model_dir):
    m = manifest(model_dir)
    assert {"model.txt", "calibration.json", "extractors/bm25.json"} <= set(m["files"])
    assert all(len(v) == 64 for v in m["files"].values()) and m["calibrated"] is True
    Scorer.load(model_dir.parent)  # the sealed folder loads


def test_one_changed_leaf_value_is_refused_before_lightgbm_reads_the_file(copy):
    booster = copy / "model.txt"
    text = booster.read_text()
    at = text.index("leaf_value=") + len("leaf_value=")
    digit = next(i for i in range(at, at + 40) if text[i].isdigit())
    booster.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
    with pytest.raises(IntegrityError, match=r"changed \['model.txt'\]"):
        Scorer.load(copy.parent)


def test_a_deleted_calibration_is_refused_not_served_uncalibrated(copy):
    (copy / "calibration.json").unlink()
    with pytest.raises(IntegrityError, match=r"missing \['calibration.json'\]"):
        Scorer.load(copy.parent)
    m = manifest(copy)  # even where the checksums are gone, the manifest says it was calibrated
    del m["files"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MissingInputError, match=r"calibration.json: missing, though the model's manifest says"):
        Scorer.load(copy.parent)


def test_an_added_file_is_refused(copy):
    (copy / "extractors" / "coverage.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"not listed \['extractors/coverage.json'\]"):
        Scorer.load(copy.parent)


@pytest.mark.parametrize("content, message", [
    ("{not json", r"calibration.json: not valid JSON"),
    ('{"kind": "sigmoid", "params": {}}', r"kind must be one of \['platt', 'isotonic'\], found 'sigmoid'"),
    ('{"kind": "isotonic", "params": {"x": [0, 1], "y": [0.2, 1.5]}}', r"isotonic y must lie in \[0, 1\]"),
    ('{"kind": "isotonic", "params": {"x": [1, 0], "y": [0.2, 0.5]}}', r"isotonic knots must be sorted"),
    ('{"kind": "isotonic", "params": {"x": [0, 1], "y": [0.6, 0.5]}}', r"isotonic knots must be sorted"),
    ('{"kind": "platt", "params": {"a": NaN, "b": 0}}', r"params.a must be finite"),
    ('{"kind": "platt", "params": {"a": 1}}', r"needs params \['a', 'b'\], missing \['b'\]"),
    ('[1, 2]', r"expected an object with 'kind' and 'params'"),
])
def test_a_calibration_that_is_not_a_monotone_map_into_0_1_is_refused_naming_the_file(copy, content, message):
    (copy / "calibration.json").write_text(content)
    from ranker.integrity import seal

    seal(copy)  # as if trained so: the calibration's own check must catch it
    with pytest.raises(UsageError, match=message) as err:
        Scorer.load(copy.parent)
    assert "calibration" in str(err.value)


def test_a_folder_from_before_checksums_loads_with_a_warning(copy, caplog):
    m = manifest(copy)
    del m["files"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="fusion_ltr.integrity"):
        Scorer.load(copy.parent)
    assert "no checksums" in caplog.text


def test_a_malformed_manifest_names_the_file(copy):
    (copy / "manifest.json").write_text('{"kind": ')
    with pytest.raises(UsageError, match=r"manifest.json: not valid JSON"):
        Scorer.load(copy.parent)
