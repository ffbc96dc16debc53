"""``fusion-ltr rerank``: rerank an existing run file with a trained model, resumably.

The input is a TREC run (``qid Q0 docno rank score tag``, with ``--queries`` for the query texts and a
corpus for the documents') or a JSONL file of ``{"qid", "query", "docs"}`` lines, where each doc is a
docno (resolved against the corpus), or an object with ``id`` and either ``text`` (inline) or nothing
else (resolved), and optional ``title``, ``timestamp``, ``rank``, ``score``. Each query is reranked by
:meth:`Scorer.rerank` with its first-stage ``rank`` and ``score``, and, with ``--member NAME=RUN``, each
other retriever's ``rank_<NAME>``/``score_<NAME>`` from that run (the list features a model trained on a
run's first stage learned from). The corpus is ``--corpus`` (a BEIR ``corpus.jsonl``, its folder or a
dataset name), else the model run's own (``index/corpus.parquet``).

The output is a TREC run (``--jsonl``: also one line per query with each document's score and calibrated
probability), in the input's query order. Each finished query is appended to ``<output>.partial`` (one
JSON line, flushed): an interrupted rerank started again reads it and computes only the queries not in it,
and the output is the same as an uninterrupted one's. A bad input line is refused naming the file and
the line.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from retrieval.data import DataFormatError, find_dataset, load_corpus, load_queries, read_trec_run, write_trec_run
from retrieval.errors import MissingInputError, UsageError
from retrieval.frames import DOCNO, QID, QUERY, RANK, SCORE, TEXT, TIMESTAMP, TITLE

from .data import strict_scores

#: keys a JSONL document object may carry
DOC_KEYS = ("id", "text", "title", "timestamp", "rank", "score")


@dataclass
class BatchSummary:
    queries: int = 0
    resumed: int = 0  # queries read back from the partial file, not recomputed
    documents: int = 0
    seconds: float = 0.0
    ms_per_query: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # seconds per extractor / stage, summed

    def as_dict(self) -> dict:
        ms = self.ms_per_query
        return {"queries": self.queries, "resumed": self.resumed, "computed": len(ms), "documents": self.documents,
                "seconds": round(self.seconds, 3), "median_ms_per_query": round(statistics.median(ms), 2) if ms else None,
                "seconds_by_part": {k: round(v, 3) for k, v in sorted(self.parts.items())}}


def _corpus(corpus, scorer) -> pd.DataFrame | None:
    """The corpus frame to resolve docnos against (indexed by docno), or None when none is found."""
    if corpus:
        path = Path(corpus)
        if not path.exists():
            path = find_dataset(str(corpus))
        if path.is_dir():
            path = next((p for p in (path / "corpus.jsonl", path / "corpus.jsonl.gz") if p.exists()), path / "corpus.jsonl")
        frame = load_corpus(path)
    else:
        own = scorer.run_dir / "index" / "corpus.parquet" if scorer.run_dir else None
        if own is None or not own.exists():
            return None
        frame = pd.read_parquet(own)
    return frame.set_index(DOCNO, drop=False)


def _queries(path) -> dict[str, str]:
    path = Path(path)
    if not path.exists():
        path = find_dataset(str(path)) / "queries.jsonl"
    if path.suffix == ".tsv":
        out = {}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2 or not parts[1].strip():
                    raise DataFormatError(f"{path}:{lineno}: expected 'qid<TAB>query text', found {line.strip()[:80]!r}")
                out[parts[0]] = parts[1]
        return out
    frame = load_queries(path)
    return dict(zip(frame[QID].astype(str), frame[QUERY]))


def _doc(docno: str, corpus, where: str, **extra) -> dict:
    if corpus is None:
        raise MissingInputError(f"{where}: document {docno!r} needs its text: pass --corpus (a corpus.jsonl, its "
                                "folder or a dataset name), or give the text inline")
    if docno not in corpus.index:
        raise DataFormatError(f"{where}: document {docno!r} is not in the corpus")
    row = corpus.loc[docno]
    doc = {"id": docno, "text": row[TEXT], "title": row.get(TITLE, "") or ""}
    stamp = row.get(TIMESTAMP)
    if stamp is not None and stamp == stamp:
        doc["timestamp"] = pd.Timestamp(stamp).isoformat()
    return doc | extra


def read_trec_lists(path, queries: dict[str, str], corpus, members: dict[str, pd.DataFrame]):
    """``(qid, query, docs)`` per query of a TREC run, in the run's order of first appearance."""
    run = read_trec_run(path)
    member_rows = {name: m.set_index([QID, DOCNO]) for name, m in members.items()}
    for qid, part in run.groupby(QID, sort=False):
        if qid not in queries:
            raise DataFormatError(f"{path}: query {qid!r} has no text in the queries file")
        part = part.sort_values(RANK, kind="stable")
        docs = []
        for row in part.itertuples():
            extra = {"rank": int(row.rank), "score": float(row.score)}
            for name, m in member_rows.items():
                hit = (qid, row.docno) in m.index
                extra[f"rank_{name}"] = int(m.loc[(qid, row.docno), RANK]) if hit else None
                extra[f"score_{name}"] = float(m.loc[(qid, row.docno), SCORE]) if hit else None
            docs.append(_doc(row.docno, corpus, f"{path}: query {qid}", **extra))
        yield qid, queries[qid], docs


def read_jsonl_lists(path, corpus):
    """``(qid, query, docs)`` per line of a JSONL input."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{where}: not valid JSON ({exc.msg} at character {exc.pos})") from None
            if not isinstance(item, dict) or set(item) - {"qid", "query", "docs"} or \
                    not isinstance(item.get("query"), str) or not isinstance(item.get("docs"), list) or "qid" not in item:
                found = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise DataFormatError(f"{where}: expected an object with qid, query (a string) and docs (a list), "
                                      f"found {found}")
            docs = []
            for i, d in enumerate(item["docs"]):
                if isinstance(d, str):
                    docs.append(_doc(d, corpus, f"{where}: docs[{i}]"))
                elif isinstance(d, dict) and "id" in d and not set(d) - set(DOC_KEYS):
                    docs.append(d if "text" in d else _doc(str(d["id"]), corpus, f"{where}: docs[{i}]", **d))
                else:
                    found = sorted(d) if isinstance(d, dict) else type(d).__name__
                    raise DataFormatError(f"{where}: docs[{i}]: expected a docno or an object with id and optional "
                                          f"{', '.join(DOC_KEYS[1:])}; found {found}")
            yield str(item["qid"]), item["query"], docs


def _read_partial(path: Path) -> dict[str, dict]:
    """What an interrupted rerank finished: qid -> its line (a last line cut short is dropped)."""
    done = {}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:  # the line being written when the process stopped
                    break
                done[item["qid"]] = item
    return done


def rerank_file(scorer, input_path, output, *, queries=None, corpus=None, members: dict | None = None,
                jsonl=None, top_k: int | None = None, tag: str = "fusion-ltr", progress: bool = True,
                stop_after: int | None = None) -> BatchSummary:
    """Rerank every query of ``input_path`` into the TREC run ``output`` (see the module docstring).
    ``stop_after`` computes at most that many queries, then returns without writing ``output`` (what an
    interruption leaves: the tests use it)."""
    from tqdm.auto import tqdm

    input_path, output = Path(input_path), Path(output)
    if not input_path.exists():
        raise MissingInputError(f"--input {input_path} does not exist")
    docs_corpus = _corpus(corpus, scorer)
    with open(input_path, encoding="utf-8", errors="replace") as f:
        is_jsonl = input_path.suffix == ".jsonl" or f.read(1) == "{"
    if is_jsonl:
        lists = list(read_jsonl_lists(input_path, docs_corpus))
    else:
        if not queries:
            raise UsageError("a TREC run needs --queries (a queries.jsonl, a qid<TAB>text .tsv or a dataset name)")
        member_runs = {name: read_trec_run(p) for name, p in (members or {}).items()}
        lists = list(read_trec_lists(input_path, _queries(queries), docs_corpus, member_runs))
    partial = output.with_name(output.name + ".partial")
    done = _read_partial(partial)
    summary = BatchSummary(queries=len(lists), resumed=sum(q in done for q, _, _ in lists))
    t0 = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as out:
        todo = [item for item in lists if item[0] not in done]
        for n, (qid, query, docs) in enumerate(tqdm(todo, desc="rerank", unit="query", disable=not progress)):
            if stop_after is not None and n >= stop_after:
                summary.seconds = time.perf_counter() - t0
                return summary
            ranking = scorer.rerank(query, docs, top_k=top_k)
            line = {"qid": qid, "results": [{"docno": r.id, "score": r.score, "probability": r.probability}
                                            for r in ranking]}
            out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())
            done[qid] = line
            summary.ms_per_query.append(ranking.timing["total"] * 1000)
            for part, seconds in ranking.timing.items():
                if part != "total":
                    summary.parts[part] = summary.parts.get(part, 0.0) + seconds
    summary.documents = sum(len(done[q]["results"]) for q, _, _ in lists)
    rows = [(qid, r["docno"], rank, r["score"]) for qid, _, _ in lists
            for rank, r in enumerate(done[qid]["results"], 1)]
    # scores that fall strictly with rank at the file's 6 decimals: an evaluator sorting by score sees this order
    write_trec_run(strict_scores(pd.DataFrame(rows, columns=[QID, DOCNO, RANK, SCORE])), output, tag=tag)
    if jsonl:
        tmp = Path(str(jsonl) + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for qid, _, _ in lists:
                f.write(json.dumps(done[qid]) + "\n")
        tmp.replace(jsonl)
    partial.unlink()
    summary.seconds = time.perf_counter() - t0
    return summary
