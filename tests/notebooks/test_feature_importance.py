"""notebooks/feature_importance.ipynb runs top to bottom against a tiny run that `fusion-ltr run` builds here."""

import json
from pathlib import Path

import pytest

from ranker.cli import main
from tests.ranker.conftest import generated  # noqa: F401 - the fixture: a tiny generated dataset and config

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "feature_importance.ipynb"


def test_notebook_runs_on_a_fresh_run(generated, monkeypatch, capsys):
    config, run = generated
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {run.resolve()}" in out and "| lambdamart |" in out

    monkeypatch.setenv("FUSION_LTR_RUN", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    report = json.loads((run / "report" / "importance.json").read_text())
    assert f"query {report['explain']['qid']}" in text and "latency by extractor" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 4  # SHAP summary, mean |SHAP|, ablation, cost vs benefit


def test_notebook_runs_on_a_cascade_run(tmp_path, monkeypatch, capsys):
    from tests.ranker.conftest import generated_dataset, write_config
    from tests.ranker.test_cascade import CASCADE

    config, run = tmp_path / "gen.toml", tmp_path / "run"
    write_config(config, generated_dataset(tmp_path / "gen"), run, ranker=CASCADE,
                 extractors="[features.extractors.bm25]\n[features.extractors.length]\n[features.extractors.coverage]")
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    monkeypatch.setenv("FUSION_LTR_RUN", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "cascade: stage 1: 8 features, keeps 5 -> stage 2: 11 features" in text and "last stage" in text
    assert "previous stages" in "\n".join(o.get("data", {}).get("text/plain", "") for c in nb.cells
                                          if c.cell_type == "code" for o in c.get("outputs", []))
