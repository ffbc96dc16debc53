"""Training on Dask (`[compute] engine = "dask"`, a 2-worker LocalCluster): the same model folder, a
score within 0.005 nDCG@10 of the local model, served by the Scorer."""

import json
import shutil

import pytest

from ranker import Scorer
from ranker.cli import main

pytest.importorskip("distributed")


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
def test_a_dask_trained_model_matches_the_local_one_and_serves(generated, tmp_path, backend, capsys):
    config, run = generated
    text = config.read_text().replace("[ranker.params]\n", f'[ranker.params]\nbackend = "{backend}"\n')
    config.write_text(text)
    for step in ("retrieve", "features", "train", "evaluate"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    local = json.loads((run / "eval" / "test" / "ranker.json").read_text())["means"]["lambdamart"]["nDCG@10"]
    shutil.copytree(run / "model", tmp_path / "local-model")

    config.write_text(text + '[compute]\nengine = "dask"\nworkers = 2\npartitions = 2\n')
    capsys.readouterr()
    assert main(["train", "--config", str(config)]) == 0
    assert main(["evaluate", "--config", str(config)]) == 0
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["train"]["engine"] == "dask" and manifest["train"]["workers"] == 2
    assert sorted(p.name for p in (run / "model").iterdir()) == sorted(p.name for p in (tmp_path / "local-model").iterdir())
    remote = json.loads((run / "eval" / "test" / "ranker.json").read_text())["means"]["lambdamart"]["nDCG@10"]
    assert abs(remote - local) <= 0.005
    scorer = Scorer.load(run)
    assert scorer.search("volcano magma eruption", top_k=3)[0].id == "rel0"
