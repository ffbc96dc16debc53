import pandas as pd
import pytest

from retrieval.frames import FrameError, attach, doc_text, validate, validate_queries


def test_validate_names_missing_columns():
    with pytest.raises(FrameError, match=r"run: missing column\(s\) \['rank'\].*found \['qid', 'docno'\]"):
        validate(pd.DataFrame({"qid": [], "docno": []}), ("qid", "docno", "rank"), what="run")
    with pytest.raises(FrameError, match="expected a pandas DataFrame, found list"):
        validate([], ("qid",), what="run")


@pytest.mark.parametrize("text", ["", "   ", "\t\n", None])
def test_empty_or_whitespace_query_is_an_error(text):
    queries = pd.DataFrame({"qid": ["ok", "bad"], "query": ["fine", text]})
    with pytest.raises(FrameError, match=r"1 empty or whitespace-only query text\(s\) \(qid 'bad'\)"):
        validate_queries(queries)


def test_duplicate_query_ids_are_an_error():
    with pytest.raises(FrameError, match="duplicate qid"):
        validate_queries(pd.DataFrame({"qid": ["a", "a"], "query": ["x", "y"]}))


def test_doc_text_joins_title_and_text():
    corpus = pd.DataFrame({"docno": ["1", "2", "3"], "title": ["T", "", None], "text": ["body", "only", ""]})
    assert doc_text(corpus) == ["T body", "only", ""]


def test_attach_builds_the_candidate_frame():
    run = pd.DataFrame({"qid": ["q"], "docno": ["d"], "rank": [1], "score": [0.5], "retriever": ["bm25"]})
    out = attach(run, pd.DataFrame({"qid": ["q"], "query": ["hello"]}),
                 pd.DataFrame({"docno": ["d"], "title": ["t"], "text": ["x"]}))
    assert list(out.columns) == ["qid", "query", "docno", "text", "title", "timestamp", "rank", "score", "retriever"]
    assert out.loc[0, "query"] == "hello" and out.loc[0, "title"] == "t" and pd.isna(out.loc[0, "timestamp"])
