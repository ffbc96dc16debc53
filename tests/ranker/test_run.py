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
    assert "| lambdamart |" in out and "best baseline, chosen on the training split:" in out
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


def test_a_cold_run_parses_the_corpus_once(generated, monkeypatch, capsys):
    import retrieval.data as data

    config, _ = generated
    loads = []
    original = data.load_corpus
    monkeypatch.setattr(data, "load_corpus", lambda path: loads.append(path) or original(path))
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    assert len(loads) == 1, loads


def test_every_step_is_a_cli_command_and_a_run_step(generated, monkeypatch, capsys):
    from ranker import steps
    from ranker.cli import build_parser

    config, run = generated
    seen = []
    extra = steps.Step("hello", lambda r, name=None: seen.append((r.cfg.run.dir, name)), "say hello",
                       args=(steps.Arg(("--name",)),))
    monkeypatch.setattr(steps, "STEPS", steps.STEPS + [extra])
    assert build_parser().parse_args(["hello", "--config", "x", "--name", "n"]).name == "n"
    assert main(["hello", "--config", str(config), "--name", "n"]) == 0
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    assert "== hello: done" in capsys.readouterr().out
    assert seen == [(str(run), "n"), (str(run), None)]


def test_config_problems_are_found_before_any_step_runs(generated, tmp_path, capsys):
    config, run = generated
    text = config.read_text()
    config.write_text(text.replace("[features.extractors.length]\n", "[features.extractors.length]\n"
                                   "[features.extractors.crossencoder]\nmodel = \"models/my/crossencoder\"\n"))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    assert "features.extractors.crossencoder.model = 'models/my/crossencoder' is a local path that does not " \
           "exist" in capsys.readouterr().err
    assert not (run / "retrieval").exists()  # found before retrieval, not after

    config.write_text(text.replace("[dataset]\n", "[dataset]\nsplits = [\"train\", \"dev\", \"test\"]\n"))
    assert main(["retrieve", "--config", str(config)]) == 2
    assert "dataset.splits names ['dev'], but" in capsys.readouterr().err and not (run / "retrieval").exists()


def test_a_failed_train_leaves_the_previous_model_whole(generated, capsys):
    config, run = generated
    for step in ("retrieve", "features", "train"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    before = {p.name: p.read_bytes() for p in (run / "model").iterdir() if p.is_file()}
    config.write_text(config.read_text().replace("[ranker.params]\n", "[ranker.params]\nmonotone = { nope = 1 }\n"))
    assert main(["train", "--config", str(config)]) == 2
    assert "ranker.monotone names unknown feature(s) ['nope']" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / "model").iterdir() if p.is_file()} == before
    assert not list(run.glob("*.tmp"))


def test_train_refuses_a_feature_set_built_otherwise_than_configured(generated, capsys):
    config, run = generated
    for step in ("retrieve", "features"):
        assert main([step, "--config", str(config)] + (["--quiet"] if step == "features" else [])) == 0
    text = config.read_text()
    config.write_text(text.replace("[features.extractors.bm25]\n", "[features.extractors.bm25]\nk1 = 1.5\n"))
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bm25: k1 0.9 -> 1.5)" in err and f"run `fusion-ltr features --config {config}`" in err
    assert not (run / "model").exists()  # nothing trained on the values of the old k1

    config.write_text(text.replace("[features.extractors.coverage]\n", "[features.extractors.freshness]\n"))
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "freshness: configured, not built" in err and "coverage: built, no longer configured" in err

    assert main(["features", "--config", str(config), "--quiet"]) == 0  # builds what is configured now
    assert main(["train", "--config", str(config)]) == 0


def test_a_config_can_retrain_the_ranker_on_another_runs_features(generated, tmp_path, capsys):
    from ranker import Scorer

    config, run = generated
    assert main(["run", "--config", str(config), "--quiet", "--no-ablation"]) == 0
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace(f'dir = "{run}"', f'dir = "{tmp_path / "run2"}"')
                     .replace("[features]\n", f'[features]\nfrom_run = "{run}"\n')
                     .replace("num_leaves = 7", "num_leaves = 3"))
    capsys.readouterr()
    assert main(["run", "--config", str(other), "--quiet", "--no-ablation"]) == 0
    out = capsys.readouterr().out
    assert "== retrieve" not in out and "== features" not in out and "== train: done" in out
    assert (tmp_path / "run2" / "model" / "model.txt").exists() and not (tmp_path / "run2" / "features.duckdb").exists()
    assert json.loads((tmp_path / "run2" / "model" / "manifest.json").read_text())["params"]["num_leaves"] == 3
    assert Scorer.load(tmp_path / "run2").search("volcano magma eruption", top_k=3)[0].id == "rel0"
    assert main(["features", "--config", str(other)]) == 2
    assert "reuses the candidates and features of" in capsys.readouterr().err


def test_a_locked_store_is_one_line_and_exit_2(generated, capsys):
    import subprocess
    import sys

    config, run = generated
    assert main(["retrieve", "--config", str(config)]) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from features.store import FeatureStore\n"
         f"s = FeatureStore({str(run / 'features.duckdb')!r}); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert main(["features", "--config", str(config), "--quiet"]) == 2
    finally:
        holder.communicate("", timeout=60)
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusion-ltr features: error: feature store") and len(err.splitlines()) == 1
    assert f"open for writing in process {holder.pid}" in err
    assert main(["features", "--config", str(config), "--quiet"]) == 0  # released: the build goes on
