"""The run layout's paths, and folders replaced only when a step's writing succeeded."""

import pytest

from ranker.layout import RunLayout, replaced_atomically, slug


def test_paths_of_a_run_and_of_a_run_that_reuses_another(tmp_path):
    own = RunLayout(tmp_path / "a")
    assert own.store == tmp_path / "a" / "features.duckdb" and own.model("lambdamart[content]").name == "model-content"
    reuse = RunLayout(tmp_path / "b", source=tmp_path / "a")
    assert reuse.store == own.store and reuse.retrieval_run("bm25", "test") == own.retrieval_run("bm25", "test")
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
