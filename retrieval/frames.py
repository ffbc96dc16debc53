"""The candidate-frame contract: column names and the one validator used at every boundary.

A *candidate frame* is a pandas DataFrame with one row per (query, document) pair that a
first-stage retriever proposed. Every layer above (features, ranker) reads these names from here
and nowhere else.

=========== ========================================================================
column      meaning
=========== ========================================================================
qid         query id (str)
query       query text (str)
docno       document id (str)
text        document body (str, may be empty)
title       document title (str, may be empty)
timestamp   document date (datetime64[ns, UTC]; NaT when unknown)
rank        1-based first-stage rank within the query (int)
score       first-stage score, higher is better (float)
retriever   name of the retriever that produced the row (str)
=========== ========================================================================

Optional on an app's candidates: ``embedding`` (the document's vector, or None) with
``embedding_model`` (the model id it came from), which the bi-encoder uses instead of encoding.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .errors import UsageError

QID = "qid"
QUERY = "query"
DOCNO = "docno"
TEXT = "text"
TITLE = "title"
TIMESTAMP = "timestamp"
RANK = "rank"
SCORE = "score"
RETRIEVER = "retriever"
LABEL = "label"
EMBEDDING = "embedding"
EMBEDDING_MODEL = "embedding_model"

#: Columns of a corpus frame (one row per document).
CORPUS_COLUMNS = (DOCNO, TITLE, TEXT, TIMESTAMP)
#: Columns of a query frame (one row per query).
QUERY_COLUMNS = (QID, QUERY)
#: Columns of a qrels frame (one row per judgment).
QRELS_COLUMNS = (QID, DOCNO, LABEL)
#: Columns every run / candidate frame carries; ``query``, ``text``, ``title`` and ``timestamp``
#: are joined in by :func:`attach` when a later stage needs them.
RUN_COLUMNS = (QID, DOCNO, RANK, SCORE, RETRIEVER)
CANDIDATE_COLUMNS = (QID, QUERY, DOCNO, TEXT, TITLE, TIMESTAMP, RANK, SCORE, RETRIEVER)


class FrameError(UsageError):
    """A frame does not have the shape a component expects."""


def validate(frame: pd.DataFrame, required: Iterable[str], *, what: str) -> pd.DataFrame:
    """Check that ``frame`` is a DataFrame with the ``required`` columns; return it unchanged.

    ``what`` names the frame in the error ("queries", "corpus", "run", ...), so that the message
    says what was expected and what was found.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(f"{what}: expected a pandas DataFrame, found {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise FrameError(
            f"{what}: missing column(s) {missing}; expected at least {list(required)}, "
            f"found {list(frame.columns)}"
        )
    return frame


def validate_queries(queries: pd.DataFrame) -> pd.DataFrame:
    """Validate a query frame: required columns, unique ids, no empty or whitespace-only text."""
    validate(queries, QUERY_COLUMNS, what="queries")
    text = queries[QUERY].fillna("").astype(str)
    empty = queries.loc[text.str.strip() == "", QID].astype(str).tolist()
    if empty:
        shown = ", ".join(repr(q) for q in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise FrameError(
            f"queries: {len(empty)} empty or whitespace-only query text(s) (qid {shown}); "
            "expected non-empty text for every query"
        )
    dupes = queries[QID][queries[QID].duplicated()].astype(str).unique().tolist()
    if dupes:
        raise FrameError(f"queries: duplicate qid(s) {dupes[:5]}; expected one row per query")
    return queries


def validate_corpus(corpus: pd.DataFrame) -> pd.DataFrame:
    """Validate a corpus frame: required columns and unique document ids (empty text is fine)."""
    validate(corpus, (DOCNO, TEXT), what="corpus")
    dupes = corpus[DOCNO][corpus[DOCNO].duplicated()].astype(str).unique().tolist()
    if dupes:
        raise FrameError(f"corpus: duplicate docno(s) {dupes[:5]}; expected one row per document")
    return corpus


def doc_text(corpus: pd.DataFrame) -> list[str]:
    """The text a retriever indexes for each document: ``title`` and ``text`` joined by a space."""
    title = corpus[TITLE].fillna("").astype(str) if TITLE in corpus else ""
    body = corpus[TEXT].fillna("").astype(str)
    return (title + " " + body).str.strip().tolist()


def attach(run: pd.DataFrame, queries: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """Join query text and document fields onto a run, giving a full candidate frame."""
    validate(run, RUN_COLUMNS, what="run")
    q = queries[[QID, QUERY]]
    d = corpus[[c for c in CORPUS_COLUMNS if c in corpus.columns]]
    out = run.merge(q, on=QID, how="left").merge(d, on=DOCNO, how="left")
    for col in (TEXT, TITLE):
        if col not in out:
            out[col] = ""
        out[col] = out[col].fillna("")
    if TIMESTAMP not in out:
        out[TIMESTAMP] = pd.NaT
    return out[list(CANDIDATE_COLUMNS)]
