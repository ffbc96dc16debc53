"""`fusion-ltr rerank` on a tiny run: the evaluation's figure from a TREC run, resuming, JSONL, bad lines."""

import json

import pandas as pd
import pytest

from ranker import Scorer
from ranker import evaluate as ev
from ranker.batch import rerank_file
from ranker.cli import main
from retrieval.data import DataFormatError, load_qrels, read_trec_run
from tests.ranker.conftest import lexical_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return lexical_run(tmp_path_factory.mktemp("batch"), steps=("retrieve", "features", "train", "evaluate"))


def ndcg(path, folder) -> float:
    return ev.mean(ev.per_query(read_trec_run(path), load_qrels(folder / "qrels" / "test.tsv"), ["nDCG@10"]))["nDCG@10"]


def test_reranking_the_test_run_gives_the_evaluations_figure(run, tmp_path, capsys):
    run_dir, folder = run
    out = tmp_path / "reranked.trec"
    args = ["rerank", "--model", str(run_dir), "--input", str(run_dir / "retrieval" / "bm25.test.trec"),
            "--queries", str(folder / "queries.jsonl"), "--output", str(out), "--jsonl", str(tmp_path / "r.jsonl"),
            "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert summary["queries"] == summary["computed"] == 10 and summary["resumed"] == 0
    assert {"bm25", "ranker"} <= set(summary["seconds_by_part"])
    evaluated = json.loads((run_dir / "eval" / "test" / "ranker.json").read_text())["means"]["lambdamart"]["nDCG@10"]
    assert round(ndcg(out, folder), 4) == round(evaluated, 4)
    # the same order as the Scorer's, with the first stage's ranks and scores passed on
    scorer, first = Scorer.load(run_dir), read_trec_run(run_dir / "retrieval" / "bm25.test.trec")
    texts = pd.read_parquet(run_dir / "index" / "corpus.parquet").set_index("docno")
    query = dict(pd.read_json(folder / "queries.jsonl", lines=True)[["_id", "text"]].values)["q25"]
    part = first[first.qid == "q25"]
    docs = [{"id": d, "text": texts.loc[d, "text"], "title": texts.loc[d, "title"], "rank": int(r), "score": s}
            for d, r, s in zip(part.docno, part["rank"], part.score)]
    got = read_trec_run(out)
    assert got[got.qid == "q25"].docno.tolist() == [r.id for r in scorer.rerank(query, docs)]
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all(0 <= r["probability"] <= 1 for r in lines[0]["results"])


def test_an_interrupted_rerank_resumes_and_writes_the_same_output(run, tmp_path):
    run_dir, folder = run
    kw = dict(queries=folder / "queries.jsonl", progress=False)
    source = run_dir / "retrieval" / "bm25.test.trec"
    whole = tmp_path / "whole.trec"
    rerank_file(Scorer.load(run_dir), source, whole, **kw)
    cut = tmp_path / "cut.trec"
    first = rerank_file(Scorer.load(run_dir), source, cut, stop_after=4, **kw)
    assert len(first.ms_per_query) == 4 and not cut.exists()
    partial = cut.with_name("cut.trec.partial")
    with open(partial, "a") as f:
        f.write('{"qid": "q2')  # the line being written when the process was killed
    resumed = rerank_file(Scorer.load(run_dir), source, cut, **kw)
    assert resumed.resumed == 4 and len(resumed.ms_per_query) == 6
    assert cut.read_bytes() == whole.read_bytes() and not partial.exists()


def test_a_jsonl_input_takes_docnos_objects_and_inline_texts(run, tmp_path):
    run_dir, _ = run
    items = [{"qid": "a", "query": "coffee bean roast", "docs": ["rel25", {"id": "dis25_0"},
                                                                  {"id": "mine", "text": "roast coffee bean", "rank": 3}]},
             {"qid": "b", "query": "kite wind string", "docs": ["rel31", "dis31_1"]}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "out.trec"
    rerank_file(Scorer.load(run_dir), source, out, progress=False)
    got = read_trec_run(out)
    texts = pd.read_parquet(run_dir / "index" / "corpus.parquet").set_index("docno")
    docs = [{"id": "rel25", "text": texts.loc["rel25", "text"], "title": texts.loc["rel25", "title"]},
            {"id": "dis25_0", "text": texts.loc["dis25_0", "text"], "title": ""},
            {"id": "mine", "text": "roast coffee bean", "rank": 3}]
    assert got[got.qid == "a"].docno.tolist() == [r.id for r in Scorer.load(run_dir).rerank("coffee bean roast", docs)]
    assert sorted(got[got.qid == "b"].docno) == ["dis31_1", "rel31"]


@pytest.mark.parametrize("lines, message", [
    (['{"qid": "a", "query": "q", "docs": ["rel1"]}', '{"qid": "b", "query": '], r"in.jsonl:2: not valid JSON"),
    (['{"qid": "a", "query": "q", "docs": ["rel1"], "extra": 1}'], r"in.jsonl:1: expected an object with qid"),
    (['{"qid": "a", "query": "q", "docs": [{"id": "x", "txt": "typo"}]}'], r"in.jsonl:1: docs\[0\]: expected a docno"),
    (['{"qid": "a", "query": "q", "docs": ["nowhere"]}'], r"in.jsonl:1: docs\[0\]: document 'nowhere' is not in"),
])
def test_bad_jsonl_lines_are_refused_by_file_and_line(run, tmp_path, lines, message):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=message):
        rerank_file(Scorer.load(run[0]), source, tmp_path / "out.trec", progress=False)
    assert not (tmp_path / "out.trec").exists()


def test_a_bad_trec_line_and_a_query_without_text_are_named(run, tmp_path):
    run_dir, folder = run
    source = tmp_path / "in.trec"
    source.write_text("q25 Q0 rel25 1 3.5 bm25\nq25 Q0 dis25_0 2 bm25\n")
    with pytest.raises(DataFormatError, match=r"in.trec:2: expected 'qid Q0 docno rank score tag'"):
        rerank_file(Scorer.load(run_dir), source, tmp_path / "o.trec", queries=folder / "queries.jsonl")
    source.write_text("nope Q0 rel25 1 3.5 bm25\n")
    with pytest.raises(DataFormatError, match=r"query 'nope' has no text"):
        rerank_file(Scorer.load(run_dir), source, tmp_path / "o.trec", queries=folder / "queries.jsonl")
    assert main(["rerank", "--model", str(run_dir), "--input", str(source), "--output", str(tmp_path / "o.trec")]) == 2
