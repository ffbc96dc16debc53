"""notebooks/interaction_log.ipynb runs top to bottom against a tiny run trained on a hand-made log."""

import json

import pytest

from ranker.cli import main
from tests.ranker.conftest import RANKER, generated_dataset, run_steps, write_config
from tests.ranker.test_labels import LABELS, log_for

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from tests.notebooks.test_feature_importance import NOTEBOOK  # noqa: E402

LOG_NOTEBOOK = NOTEBOOK.parent / "interaction_log.ipynb"


def test_the_interaction_log_notebook_runs_on_a_run_trained_on_clicks(tmp_path, monkeypatch):
    folder = generated_dataset(tmp_path / "gen")
    config = tmp_path / "gen.toml"
    write_config(config, folder, tmp_path / "run", extractors="[features.extractors.bm25]\n"
                 "[features.extractors.coverage]\n[features.extractors.length]\n[features.extractors.feedback]",
                 ranker=RANKER + LABELS.format(model="position"))
    run_steps(config, ("retrieve",))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in log_for(tmp_path / "run", [f"q{i}" for i in range(22)])) + "\n")
    assert main(["events", "ingest", str(events), "--config", str(config)]) == 0
    run_steps(config, ("features", "train", "evaluate"))
    monkeypatch.setenv("FUSION_LTR_RUN", str(tmp_path / "run"))
    nb = nbformat.read(LOG_NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(LOG_NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "23 impressions of 22 queries, 22 clicks" in text and "examination by position: 1.000" in text
    assert "reorders the first stage's top 4" in text and "| lambdamart |" in text
    assert "feedback features by rank among the model's" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 2
