"""The run layout's paths, and folders replaced only when a step's writing succeeded."""

import pytest

from ranker.layout import RunLayout, replaced_atomically, slug


def test_paths_of_a_run_and_of_a_run_that_reuses_another(tmp_path):
    own = RunLayout(tmp_path / "a")
    assert own.store == tmp_path / "a" / "features.duckdb" and own.model("lambdamart[content]").name == "model-content"
    reuse = RunLayout(tmp_path / "b", source=tmp_path / "a")
    assert reuse.store == own.store and reuse.retrieval_trec("bm25", "test") == own.retrieval_trec("bm25", "test")
    assert reuse.model() == tmp_path / "b" / "model" and reuse.eval("test") == tmp_path / "b" / "eval" / "test"
    assert slug("lambdamart[content]") == "lambdamart-content" and slug("bm25 alone") == "bm25_alone"
    with pytest.raises(ValueError, match="model name must be"):
        own.model("other")


def test_a_failed_block_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with replaced_atomically(folder) as tmp:
            (tmp / "model.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (folder / "model.txt").read_text() == "old" and not (tmp_path / "model.tmp").exists()
    with replaced_atomically(folder, keep=True) as tmp:
        (tmp / "other.txt").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["model.txt", "other.txt"]
    with replaced_atomically(folder) as tmp:
        (tmp / "model.txt").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["model.txt"] and (folder / "model.txt").read_text() == "new"


def test_a_second_command_on_a_run_folder_is_refused_naming_the_first(tmp_path, capsys):
    from ranker.cli import main
    from ranker.layout import locked
    from tests.ranker.conftest import generated_dataset, write_config

    config = tmp_path / "gen.toml"
    write_config(config, generated_dataset(tmp_path / "gen"), tmp_path / "run",
                 extractors="[features.extractors.length]")
    assert main(["retrieve", "--config", str(config)]) == 0
    with locked(tmp_path / "run", "train"):  # as if another `fusion-ltr train` were writing it
        assert main(["features", "--config", str(config), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "another fusion-ltr command is writing this run folder (`fusion-ltr train`, pid" in err
        assert not (tmp_path / "run" / "features").exists()  # nothing was written
    assert main(["features", "--config", str(config), "--quiet"]) == 0  # released: it runs
