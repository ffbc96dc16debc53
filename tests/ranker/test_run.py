"""`fusion-ltr run`: every step in order, then cached; a changed input reruns what depends on it."""

import json

from ranker.cli import main


def test_run_does_every_step_then_caches_them(generated, capsys):
    config, run = generated
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    out = capsys.readouterr().out
    for step in ("retrieve", "features", "train", "evaluate", "report"):
        assert f"== {step}" in out
    assert "finetune-ce" not in out  # no cross-encoder configured
    assert "| lambdamart |" in out and "best baseline:" in out
    assert set(json.loads((run / "steps.json").read_text())) == {"retrieve", "train", "report"}
    model_time = (run / "model" / "model.txt").stat().st_mtime_ns

    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    out = capsys.readouterr().out
    assert "== retrieve: cached" in out and "== train: cached" in out and "== report: cached" in out
    assert (run / "model" / "model.txt").stat().st_mtime_ns == model_time

    config.write_text(config.read_text().replace("n_estimators = 40", "n_estimators = 30"))
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    out = capsys.readouterr().out
    assert "== retrieve: cached" in out and "== train: done" in out and "== report: done" in out
