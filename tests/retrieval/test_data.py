import gzip
import math

import numpy as np
import pandas as pd
import pytest

from retrieval import data
from retrieval.data import DataFormatError, DatasetNotFoundError
from tests.conftest import write_beir, shared_dataset


def test_beir_loader_keeps_title_text_and_dates(tiny_beir):
    ds = data.load_beir(tiny_beir)
    assert list(ds.corpus.columns) == ["docno", "title", "text", "timestamp"]
    d1 = ds.corpus.set_index("docno").loc["d1"]
    assert d1["title"] == "Cats" and d1["text"].startswith("The cat")
    assert d1["timestamp"] == pd.Timestamp("1970-01-01", tz="UTC")
    assert pd.isna(ds.corpus.set_index("docno").loc["d3", "timestamp"])
    assert set(ds.qrels) == {"train", "test"}
    queries, qrels = ds.split("test")
    assert sorted(queries["qid"]) == ["q3", "q4"] and len(qrels) == 2
    with pytest.raises(KeyError, match="no qrels for split 'dev'"):
        ds.split("dev")


def test_gzipped_corpus_loads(tiny_beir):
    raw = (tiny_beir / "corpus.jsonl").read_bytes()
    (tiny_beir / "corpus.jsonl").unlink()
    with gzip.open(tiny_beir / "corpus.jsonl.gz", "wb") as fh:
        fh.write(raw)
    assert len(data.load_beir(tiny_beir).corpus) == 6


def test_malformed_jsonl_line_names_file_and_line(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(2, '{"_id": "bad", "text": ')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:3: expected a JSON object"):
        data.load_beir(tiny_beir)


def test_query_without_id_is_an_error(tiny_beir):
    (tiny_beir / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{"text": "no id"}\n')
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: expected a JSON object with keys \['_id', 'text'\]"):
        data.load_beir(tiny_beir)


def test_malformed_qrels_line_names_file_and_line(tiny_beir):
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td5\t1\nq4 d2\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:3: expected 'query-id corpus-id score'.*found 2 field"):
        data.load_beir(tiny_beir)


def test_qrels_ids_missing_from_corpus_load_with_one_counting_line(tmp_path, caplog):
    folder = write_beir(tmp_path / "ds", qrels={"test": [("q1", "d1", 1), ("q1", "gone1", 1), ("q2", "gone2", 1)]})
    with caplog.at_level("WARNING"):
        ds = data.load_beir(folder)
    assert [r.getMessage() for r in caplog.records] == [
        "ds/test: 2 qrels row(s) name a docno missing from the corpus and 0 a qid missing from the queries; they "
        "are kept (they count as relevant documents no retriever can find)"]
    assert len(ds.qrels["test"]) == 3


def test_bad_date_is_an_error_naming_the_document(tmp_path):
    folder = write_beir(tmp_path / "ds", docs=[{"_id": "x1", "text": "t", "metadata": {"date": "not a date"}}])
    with pytest.raises(DataFormatError, match="document 'x1' has metadata.date 'not a date'"):
        data.load_beir(folder)


def test_search_path_env_var_finds_dataset_by_name(tmp_path, monkeypatch):
    write_beir(tmp_path / "mine")
    monkeypatch.setenv("FUSION_LTR_DATA", str(tmp_path))
    assert data.find_dataset("mine") == tmp_path / "mine"
    assert data.search_path()[0] == tmp_path


def test_missing_dataset_lists_the_search_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_LTR_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="searched") as err:
        data.find_dataset("no-such-dataset")
    assert str(tmp_path) in str(err.value)


def test_download_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")  # closed local port
    with pytest.raises(ConnectionError, match="could not download 'scifact'.*offline"):
        data.download("scifact", tmp_path, timeout=2)
    with pytest.raises(ValueError, match="no download known"):
        data.download("not-a-beir-set", tmp_path)


def test_trec_run_roundtrip_and_malformed_line(tmp_path):
    run = pd.DataFrame({"qid": ["q1", "q1", "q2"], "docno": ["a", "b", "c"], "rank": [1, 2, 1],
                        "score": [2.5, 1.25, 0.5], "retriever": "bm25"})
    path = data.write_trec_run(run, tmp_path / "x.trec")
    back = data.read_trec_run(path)
    pd.testing.assert_frame_equal(back, run)
    path.write_text("q1 Q0 a 1 2.5 bm25\nq1 Q0 b two 1.0 bm25\n")
    with pytest.raises(DataFormatError, match=r"x\.trec:2: expected integer rank"):
        data.read_trec_run(path)


def test_svmlight_parser_on_hand_written_lines(tmp_path):
    path = tmp_path / "S1.txt"
    path.write_text(
        "2 qid:10 1:0.5 2:1 3:-0.25 #docid = GX01 inc = 1\n"
        "0 qid:10 1:0 3:2 #docid = GX02\n"
        "1 qid:11 2:4\n"
    )
    d = data.load_svmlight(path)
    assert d.X.shape == (3, 3)
    np.testing.assert_array_equal(d.X[0], [0.5, 1.0, -0.25])
    assert math.isnan(d.X[1, 1]) and d.X[1, 2] == 2.0
    assert list(d.y) == [2, 0, 1] and list(d.qids) == ["10", "10", "11"]
    assert list(d.docids) == ["GX01", "GX02", "3"]


def test_svmlight_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "S1.txt"
    path.write_text("1 qid:1 1:0.5\n1 1:0.5 qid:1\n")
    with pytest.raises(DataFormatError, match=r"S1\.txt:2: expected 'label qid:N idx:value"):
        data.load_svmlight(path)
    path.write_text("1 qid:1 1:abc\n")
    with pytest.raises(DataFormatError, match=r"S1\.txt:1: expected numeric"):
        data.load_svmlight(path)


def test_letor_mq2008_folds_follow_the_readme():
    folder = shared_dataset("letor_mq2008")
    parts = {i: data.load_svmlight(folder / f"S{i}.txt") for i in range(1, 6)}
    assert sum(len(p.y) for p in parts.values()) == 15211
    assert len({q for p in parts.values() for q in p.qids}) == 784
    train, valid, test = data.load_letor_fold(folder, 2)  # train S2,S3,S4 / valid S5 / test S1
    assert train.X.shape == (sum(len(parts[i].y) for i in (2, 3, 4)), 46)
    assert len(valid.y) == len(parts[5].y) and list(test.docids) == list(parts[1].docids)
    assert not set(train.qids) & set(test.qids)


def test_real_scifact_and_cacm_counts():
    sci = data.load_beir(shared_dataset("scifact"))
    assert len(sci.corpus) == 5183 and len(sci.queries) == 1109
    assert sci.qrels["train"]["qid"].nunique() == 809 and sci.qrels["test"]["qid"].nunique() == 300
    cacm = data.load_beir(shared_dataset("cacm"))
    assert len(cacm.corpus) == 3204 and cacm.corpus["timestamp"].notna().all()
    assert cacm.qrels["test"]["qid"].nunique() == 52


# ------------------------------------------------------------------ hardening: bad files are named

def test_a_non_utf8_byte_names_the_file_and_line(tmp_path):
    from retrieval.data import DataFormatError, load_corpus

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "caf\xff"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: expected UTF-8 text, found byte 0xff at column 26"):
        load_corpus(path)


def test_an_empty_corpus_or_query_file_is_named(tmp_path):
    from retrieval.data import DataFormatError, load_corpus, load_queries

    (tmp_path / "corpus.jsonl").write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"corpus.jsonl: no records \(expected one JSON object"):
        load_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "queries.jsonl").write_text("")
    with pytest.raises(DataFormatError, match=r"queries.jsonl: no records"):
        load_queries(tmp_path / "queries.jsonl")


def test_loaders_take_string_paths(tmp_path):
    qrels = tmp_path / "q.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    assert data.load_qrels(str(qrels))["label"].tolist() == [2]
    run = tmp_path / "r.trec"
    run.write_text("q1 Q0 d1 1 2.5 x\n")
    assert data.read_trec_run(str(run))["docno"].tolist() == ["d1"]


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                                st.builds(lambda i, t: f'{{"_id": {i}, "text": {t}}}'.encode(),
                                          st.sampled_from(['"a"', "1", "null", "[]"]),
                                          st.sampled_from(['"x"', "2", "null", '{"a": 1}']))), max_size=6),
       kind=st.sampled_from(["corpus", "queries", "qrels", "trec", "svmlight"]))
def test_any_file_content_loads_or_raises_the_project_error(tmp_path_factory, lines, kind):
    from retrieval import data
    from retrieval.errors import FusionLTRError

    path = tmp_path_factory.mktemp("h") / "f.txt"
    path.write_bytes(b"\n".join(lines))
    loader = {"corpus": data.load_corpus, "queries": data.load_queries, "qrels": data.load_qrels,
              "trec": data.read_trec_run, "svmlight": data.load_svmlight}[kind]
    try:
        out = loader(path)
    except FusionLTRError:
        return
    n = len(out.X) if kind == "svmlight" else len(out)
    assert n <= len([line for line in lines if line.strip()])


def test_hash_sample_is_seeded_sorted_and_keeps_its_members_as_it_grows():
    from retrieval.data import hash_sample

    qids = [f"q{i}" for i in range(50)]
    ten = hash_sample(qids, 10, seed=1)
    assert len(ten) == 10 and ten == sorted(ten) and hash_sample(list(reversed(qids)), 10, seed=1) == ten
    assert set(ten) < set(hash_sample(qids, 20, seed=1))
    assert hash_sample(qids, 10, seed=2) != ten
    assert hash_sample(qids[:5], 10, seed=1) == sorted(qids[:5])


@pytest.mark.parametrize("content", ["", "query-id\tcorpus-id\tscore\n"])
def test_qrels_without_a_judgement_are_named(tiny_beir, content):
    (tiny_beir / "qrels" / "train.tsv").write_text(content)
    with pytest.raises(DataFormatError, match=r"train.tsv: no judgements"):
        data.load_beir(str(tiny_beir))


def test_a_negative_grade_is_named_by_file_and_line(tiny_beir):
    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t-1\n")
    with pytest.raises(DataFormatError, match=r"train.tsv:3: expected an integer relevance grade >= 0, found '-1'"):
        data.load_beir(str(tiny_beir))


def test_a_truncated_gzip_is_named(tiny_beir):
    raw = gzip.compress((tiny_beir / "corpus.jsonl").read_bytes())
    (tiny_beir / "corpus.jsonl").unlink()
    (tiny_beir / "corpus.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl.gz: the compressed file is damaged or truncated"):
        data.load_beir(str(tiny_beir))


def test_a_query_id_with_two_texts_is_named_and_a_repeat_is_kept_once(tiny_beir):
    lines = (tiny_beir / "queries.jsonl").read_text()
    (tiny_beir / "queries.jsonl").write_text(lines + '{"_id": "q1", "text": "cat on a mat"}\n')
    queries = data.load_beir(str(tiny_beir)).queries
    assert queries["qid"].tolist().count("q1") == 1
    (tiny_beir / "queries.jsonl").write_text(lines + '{"_id": "q1", "text": "dogs"}\n')
    with pytest.raises(DataFormatError, match=r"query id 'q1' has two texts: record 1 'cat on a mat' and record 5 'dogs'"):
        data.load_beir(str(tiny_beir))
