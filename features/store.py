"""The feature store: one DuckDB file with queries, documents, candidates, qrels and feature values.

Tables (plain SQL; ``fusion-ltr features`` also creates a wide view per feature set)::

    queries     (qid, query, query_hash)
    documents   (docno, doc_hash, title, text, timestamp)
    candidates  (qid, docno, retriever, rank, score)       first-stage lists, one per retriever
    qrels       (qid, docno, label)
    features    (feature, version, qid, docno, query_hash, doc_hash, value)   long format
    synthetic_queries (docno, doc_hash, generator, query, created_at)   made once per document and settings
    provenance  (feature, version, extractor, code_version, params, model_id, state,
                 computed_at, seconds, pairs)                                  one row per written batch
    path_costs  (feature, version, path, seconds, pairs, measured_at)   cost by another path than the
                 build's, e.g. "unseen": documents the fitted state does not know (the bi-encoder encodes them)

The cache key of a value is (feature, version, qid, docno, query_hash, doc_hash): a changed query or
document text, or a new feature version, misses the cache; nothing else does. NaN is stored as NaN.
Every :meth:`FeatureStore.write` is one transaction, so a build killed half-way keeps every batch
written before it. DuckDB allows one writing process per file: a second one gets
:class:`StoreLockedError`; any number of processes may open it with ``read_only=True`` while no
process writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.errors import FusionLTRError, MissingInputError, UsageError
from retrieval.frames import DOCNO, LABEL, QID, QUERY, RANK, RETRIEVER, SCORE, TEXT, TIMESTAMP, TITLE, validate

from .base import FeatureSpec
from .matrix import RankingData

INSTALL = "pip install duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (qid VARCHAR PRIMARY KEY, query VARCHAR NOT NULL, query_hash VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS documents (docno VARCHAR PRIMARY KEY, doc_hash VARCHAR NOT NULL, title VARCHAR,
    text VARCHAR, timestamp TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS candidates (qid VARCHAR, docno VARCHAR, retriever VARCHAR, rank INTEGER, score DOUBLE,
    PRIMARY KEY (qid, docno, retriever));
CREATE TABLE IF NOT EXISTS qrels (qid VARCHAR, docno VARCHAR, label INTEGER, PRIMARY KEY (qid, docno));
CREATE TABLE IF NOT EXISTS features (feature VARCHAR, version VARCHAR, qid VARCHAR, docno VARCHAR,
    query_hash VARCHAR, doc_hash VARCHAR, value DOUBLE,
    PRIMARY KEY (feature, version, qid, docno, query_hash, doc_hash));
CREATE TABLE IF NOT EXISTS synthetic_queries (docno VARCHAR, doc_hash VARCHAR, generator VARCHAR, query VARCHAR,
    created_at TIMESTAMPTZ, PRIMARY KEY (docno, doc_hash, generator));
CREATE TABLE IF NOT EXISTS provenance (feature VARCHAR, version VARCHAR, extractor VARCHAR, code_version VARCHAR,
    params VARCHAR, model_id VARCHAR, state VARCHAR, description VARCHAR, computed_at TIMESTAMPTZ,
    seconds DOUBLE, pairs BIGINT);
CREATE TABLE IF NOT EXISTS path_costs (feature VARCHAR, version VARCHAR, path VARCHAR, seconds DOUBLE, pairs BIGINT,
    measured_at TIMESTAMPTZ, PRIMARY KEY (feature, version, path));
"""


class StoreLockedError(FusionLTRError, RuntimeError):
    """Another process has the store open (DuckDB allows one writer, or readers only)."""


class StoreCorruptError(FusionLTRError, RuntimeError):
    """The store file is not a readable DuckDB database."""


REBUILD = ("the store is a cache: move it aside and rerun `fusion-ltr features --config ...` to rebuild it "
           "(every value is recomputed from the dataset and the models)")


def _open_error(path: Path, exc: Exception, read_only: bool) -> FusionLTRError:
    """A store error that says what happened, who holds the lock and what to do."""
    text = str(exc)
    if "lock" in text.lower():
        pid = re.search(r"PID (\d+)", text)
        holder = f"process {pid.group(1)}" if pid else "another process"
        if "read-only mode" in text:  # the holder only reads: readers may share the file
            return StoreLockedError(
                f"feature store {path} is open read-only in {holder}; it cannot be written until that process "
                "ends (open it with read_only=True to read it meanwhile)")
        return StoreLockedError(
            f"feature store {path} is open for writing in {holder}; wait for it to finish (or stop it), then "
            "retry" + ("" if read_only else "; an interrupted build resumes where it stopped"))
    return StoreCorruptError(f"feature store {path} cannot be read ({text.splitlines()[0][:200]}); {REBUILD}")


def text_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _provenance(specs, provenance: dict, seconds: float, pairs: int) -> pd.DataFrame:
    """Provenance rows of one written batch: one per feature, the batch's seconds split evenly."""
    return pd.DataFrame({
        "feature": [s.name for s in specs], "version": [s.version for s in specs],
        "extractor": provenance["extractor"], "code_version": provenance["code_version"],
        "params": json.dumps(provenance["params"], sort_keys=True, default=str),
        "model_id": provenance.get("model_id"), "state": json.dumps(provenance.get("state", {}), default=str)[:10000],
        "description": [s.description for s in specs], "computed_at": datetime.now(timezone.utc),
        "seconds": seconds / len(specs), "pairs": pairs,
    })


def _spec_frame(specs) -> pd.DataFrame:
    return pd.DataFrame({"feature": [s.name for s in specs], "version": [s.version for s in specs]})


def _candidate_filter(qids, retriever: str) -> tuple[dict, str, list]:
    """Frames to register, a WHERE clause over candidates ``c`` and its parameters."""
    if qids is None:
        return {}, "c.retriever = ?", [retriever]
    return ({"_qids": pd.DataFrame({QID: [str(q) for q in qids]})},
            "c.retriever = ? AND c.qid IN (SELECT qid FROM _qids)", [retriever])


class FeatureStore:
    """A DuckDB feature store (see the module docstring for the tables)."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        try:
            import duckdb
        except ImportError as exc:
            raise ImportError(f"the feature store needs duckdb: run `{INSTALL}`") from exc
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise MissingInputError(f"feature store {self.path} does not exist: run `fusion-ltr features --config ...` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
            if not read_only:
                self.con.execute(SCHEMA)
        except (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException) as exc:
            raise _open_error(self.path, exc, read_only) from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def sql(self, query: str, params=None) -> pd.DataFrame:
        """Run SQL against the store and return a DataFrame."""
        return self.con.execute(query, params or []).df()

    @contextmanager
    def _frames(self, **frames: pd.DataFrame):
        """Make DataFrames visible to SQL under the given names for the duration of the block."""
        for name, frame in frames.items():
            self.con.register(name, frame)
        try:
            yield
        finally:
            for name in frames:
                self.con.unregister(name)

    @contextmanager
    def _transaction(self, **frames: pd.DataFrame):
        """One atomic write: committed at the end of the block, rolled back on any exception
        (KeyboardInterrupt included), so an interrupted build never leaves half a batch."""
        with self._frames(**frames):
            self.con.execute("BEGIN")
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    # ------------------------------------------------------------------------------ inputs
    def _upsert(self, table: str, frame: pd.DataFrame, key: list[str]) -> None:
        cols = ", ".join(frame.columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in frame.columns if c not in key)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        with self._transaction(_incoming=frame):
            self.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming "
                             f"ON CONFLICT ({', '.join(key)}) {action}")

    def put_queries(self, queries: pd.DataFrame) -> None:
        validate(queries, (QID, QUERY), what="queries")
        q = pd.DataFrame({QID: queries[QID].astype(str), QUERY: queries[QUERY].astype(str)})
        q["query_hash"] = [text_hash(t) for t in q[QUERY]]
        self._upsert("queries", q.drop_duplicates(QID), [QID])

    def put_documents(self, corpus: pd.DataFrame) -> None:
        """Insert or update documents; a changed title/text/timestamp gets a new content hash."""
        validate(corpus, (DOCNO, TEXT), what="corpus")
        d = pd.DataFrame({
            DOCNO: corpus[DOCNO].astype(str),
            TITLE: corpus[TITLE].fillna("").astype(str) if TITLE in corpus else "",
            TEXT: corpus[TEXT].fillna("").astype(str),
            TIMESTAMP: pd.to_datetime(corpus[TIMESTAMP], utc=True) if TIMESTAMP in corpus else pd.NaT,
        })
        d["doc_hash"] = [text_hash(ti, te, str(ts)) for ti, te, ts in zip(d[TITLE], d[TEXT], d[TIMESTAMP])]
        self._upsert("documents", d.drop_duplicates(DOCNO), [DOCNO])

    def put_candidates(self, run: pd.DataFrame) -> None:
        """Store a first-stage run (qid, docno, rank, score, retriever); replaces that retriever's rows
        for the run's queries."""
        validate(run, (QID, DOCNO, RANK, SCORE, RETRIEVER), what="candidates")
        c = run[[QID, DOCNO, RETRIEVER, RANK, SCORE]].astype({QID: str, DOCNO: str, RETRIEVER: str})
        with self._transaction(_incoming=c):
            self.con.execute("DELETE FROM candidates WHERE (qid, retriever) IN (SELECT DISTINCT qid, retriever FROM _incoming)")
            self.con.execute("INSERT INTO candidates SELECT qid, docno, retriever, rank, score FROM _incoming")

    def put_qrels(self, qrels: pd.DataFrame) -> None:
        validate(qrels, (QID, DOCNO, LABEL), what="qrels")
        self._upsert("qrels", qrels[[QID, DOCNO, LABEL]].astype({QID: str, DOCNO: str}), [QID, DOCNO])

    # ------------------------------------------------------------------------------ pairs
    def pairs(self, qids=None, *, retriever: str = "hybrid", top_n: int | None = None) -> pd.DataFrame:
        """The candidate frame of ``retriever``'s lists (with query and document fields), plus
        ``rank_<r>``/``score_<r>`` of every other retriever stored for the same pairs (NaN if absent)
        and the content hashes. Sorted by qid, then rank."""
        frames, where, params = _candidate_filter(qids, retriever)
        if top_n is not None:
            where += " AND c.rank <= ?"
            params.append(int(top_n))
        with self._frames(**frames):
            frame = self.sql(
                f"""SELECT c.qid, q.query, c.docno, d.text, d.title, d.timestamp, c.rank, c.score, c.retriever,
                           q.query_hash, d.doc_hash
                    FROM candidates c JOIN queries q USING (qid) JOIN documents d USING (docno)
                    WHERE {where} ORDER BY c.qid, c.rank""", params)
        others = [r for r in self.retrievers() if r != retriever]
        if others and len(frame):
            extra = self.sql(
                "SELECT qid, docno, retriever, rank, score FROM candidates WHERE retriever IN "
                f"({', '.join('?' * len(others))})", others)
            wide = extra.pivot_table(index=[QID, DOCNO], columns=RETRIEVER, values=[RANK, SCORE], aggfunc="first")
            wide.columns = [f"{a}_{b}" for a, b in wide.columns]
            frame = frame.merge(wide.reset_index(), on=[QID, DOCNO], how="left")
        for r in others:
            for col in (f"rank_{r}", f"score_{r}"):
                if col not in frame:
                    frame[col] = np.nan
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame

    def keys(self, qids=None, *, retriever: str = "hybrid") -> pd.DataFrame:
        """``qid, docno, rank`` of ``retriever``'s candidate pairs (the rows of :meth:`pairs`, without
        reading texts or the other lists), sorted by qid, then rank."""
        frames, where, params = _candidate_filter(qids, retriever)
        with self._frames(**frames):
            return self.sql(
                f"""SELECT c.qid, c.docno, c.rank FROM candidates c
                    JOIN queries q USING (qid) JOIN documents d USING (docno)
                    WHERE {where} ORDER BY c.qid, c.rank""", params)

    def retrievers(self) -> list[str]:
        return self.sql("SELECT DISTINCT retriever FROM candidates ORDER BY 1")[RETRIEVER].tolist()

    # ------------------------------------------------------------------------------ features
    def missing(self, pairs: pd.DataFrame, specs: tuple[FeatureSpec, ...]) -> pd.DataFrame:
        """The rows of ``pairs`` lacking a stored value for at least one of ``specs``."""
        if len(pairs) == 0:
            return pairs
        keys = pairs[[QID, DOCNO, "query_hash", "doc_hash"]].reset_index(drop=True)
        keys["_row"] = np.arange(len(keys))
        with self._frames(_pairs=keys, _specs=_spec_frame(specs)):
            have = self.sql(
                """SELECT p._row FROM _pairs p
                   JOIN features f ON f.qid = p.qid AND f.docno = p.docno
                        AND f.query_hash = p.query_hash AND f.doc_hash = p.doc_hash
                   JOIN _specs s ON f.feature = s.feature AND f.version = s.version
                   GROUP BY p._row HAVING count(*) = (SELECT count(*) FROM _specs)"""
            )["_row"].to_numpy()
        keep = np.ones(len(pairs), dtype=bool)
        keep[have] = False
        return pairs[keep]

    def write(self, pairs: pd.DataFrame, values: dict[str, np.ndarray], specs: tuple[FeatureSpec, ...],
              provenance: dict, seconds: float) -> None:
        """Store one computed batch and its provenance in a single transaction (replacing old values).

        ``seconds`` is the batch's wall time; it is split evenly over the specs so that summing the
        provenance over an extractor's features gives its true cost.
        """
        keys = pairs[[QID, DOCNO, "query_hash", "doc_hash"]].reset_index(drop=True)
        long = pd.concat(
            [keys.assign(feature=s.name, version=s.version, value=np.asarray(values[s.name], dtype=np.float64))
             for s in specs], ignore_index=True)
        self._insert(long, _provenance(specs, provenance, seconds, len(pairs)))

    def ingest_part(self, path: str | Path) -> None:
        """Take in a Parquet part written by a Dask worker (:mod:`features.dask_build`): its values and
        the provenance in its metadata, in one transaction, with the cache semantics of :meth:`write`."""
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        prov = json.loads(table.schema.metadata[b"fusion_ltr_provenance"])
        long = table.to_pandas()
        specs = [FeatureSpec(f, v, prov["descriptions"].get(f, "")) for f, v in
                 long[["feature", "version"]].drop_duplicates().itertuples(index=False)]
        self._insert(long, _provenance(specs, prov, prov["seconds"], prov["pairs"]))

    def _insert(self, long: pd.DataFrame, prov: pd.DataFrame) -> None:
        with self._transaction(_long=long, _prov=prov):
            self.con.execute(
                # DuckDB reads a pandas NaN as NULL; values come from float arrays, so NULL here was NaN.
                """INSERT INTO features SELECT feature, version, qid, docno, query_hash, doc_hash,
                          coalesce(value, 'NaN'::DOUBLE) FROM _long
                   ON CONFLICT (feature, version, qid, docno, query_hash, doc_hash) DO UPDATE SET value = excluded.value""")
            self.con.execute("INSERT INTO provenance SELECT * FROM _prov")

    # ------------------------------------------------------------------------------ synthetic queries
    def put_synthetic(self, frame: pd.DataFrame, generator: str) -> None:
        """Store generated queries (docno, doc_hash, query) made by generator settings ``generator``."""
        validate(frame, (DOCNO, "doc_hash", QUERY), what="synthetic queries")
        rows = frame[[DOCNO, "doc_hash", QUERY]].assign(generator=generator, created_at=datetime.now(timezone.utc))
        self._upsert("synthetic_queries", rows[[DOCNO, "doc_hash", "generator", QUERY, "created_at"]],
                     [DOCNO, "doc_hash", "generator"])

    def synthetic(self, generator: str) -> pd.DataFrame:
        return self.sql("SELECT docno, doc_hash, query FROM synthetic_queries WHERE generator = ?", [generator])

    # ------------------------------------------------------------------------------ reads
    def _values(self, specs, qids, retriever: str) -> pd.DataFrame:
        """Long values of ``specs`` for the current content of the candidate pairs."""
        frames, where, params = _candidate_filter(qids, retriever)
        with self._frames(_specs=_spec_frame(specs), **frames):
            return self.sql(
                f"""SELECT c.qid, c.docno, f.feature, f.value FROM candidates c
                    JOIN queries q USING (qid) JOIN documents d USING (docno)
                    JOIN features f ON f.qid = c.qid AND f.docno = c.docno
                         AND f.query_hash = q.query_hash AND f.doc_hash = d.doc_hash
                    JOIN _specs s ON f.feature = s.feature AND f.version = s.version
                    WHERE {where}""", params)

    def frame(self, specs, qids=None, *, retriever: str = "hybrid", top_n: dict[str, int] | None = None) -> pd.DataFrame:
        """A wide frame: candidate pairs (qid, docno, rank, label) and one column per spec, NaN where
        a value is missing. Sorted by qid, then first-stage rank. ``top_n`` (feature -> N) masks values
        stored for pairs ranked below N (computed once under a larger ``top_n``), so the frame holds what
        the extractor computes now, as serving does."""
        specs = tuple(specs)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise UsageError(f"duplicate feature names in {names}")
        base = self.keys(qids, retriever=retriever)
        labels = self.sql("SELECT qid, docno, label FROM qrels")
        base = base.merge(labels, on=[QID, DOCNO], how="left")
        base[LABEL] = base[LABEL].fillna(0).astype(np.int64)
        long = self._values(specs, qids, retriever)
        wide = long.pivot_table(index=[QID, DOCNO], columns="feature", values="value", aggfunc="first", dropna=False)
        out = base.merge(wide.reset_index(), on=[QID, DOCNO], how="left")
        for n in names:
            if n not in out:
                out[n] = np.nan
        for n, limit in (top_n or {}).items():
            if n in out and limit is not None:
                out.loc[out[RANK] > limit, n] = np.nan
        return out[[QID, DOCNO, RANK, LABEL] + names]

    def matrix(self, specs, qids=None, *, retriever: str = "hybrid", top_n: dict[str, int] | None = None) -> RankingData:
        """X, y, group and ids of the candidate pairs, features in the order of ``specs`` (``top_n``:
        see :meth:`frame`)."""
        specs = tuple(specs)
        f = self.frame(specs, qids, retriever=retriever, top_n=top_n)
        return RankingData.from_arrays(
            f[[s.name for s in specs]].to_numpy(np.float64), f[LABEL].to_numpy(), f[QID].to_numpy(),
            f[DOCNO].to_numpy(), [s.name for s in specs], [s.version for s in specs])

    def nan_counts(self, specs, qids=None, *, retriever: str = "hybrid") -> dict[str, int]:
        """How many candidate pairs lack a value (not stored, or stored as NaN) per feature."""
        f = self.frame(specs, qids, retriever=retriever)
        return {s.name: int(f[s.name].isna().sum()) for s in specs}

    def cost(self, specs=None) -> pd.DataFrame:
        """Seconds and pairs computed per feature version, and seconds per 1,000 pairs."""
        df = self.sql("""SELECT feature, version, any_value(extractor) AS extractor, sum(seconds) AS seconds,
                                sum(pairs) AS pairs FROM provenance GROUP BY feature, version""")
        if specs is not None:
            keep = {(s.name, s.version) for s in specs}
            df = df[[(f, v) in keep for f, v in zip(df["feature"], df["version"])]]
        df["s_per_1000_pairs"] = 1000 * df["seconds"] / df["pairs"].clip(lower=1)
        return df.reset_index(drop=True)

    def record_path_cost(self, specs, path: str, seconds: float, pairs: int) -> None:
        """The cost of computing ``specs`` by another path than the build's (e.g. ``"unseen"``: documents
        the extractor's fitted state does not know), measured on ``pairs`` pairs in ``seconds``; split
        evenly over the specs as in the provenance, and replacing an earlier measurement."""
        frame = _spec_frame(specs).assign(path=path, seconds=seconds / len(specs), pairs=pairs,
                                          measured_at=datetime.now(timezone.utc))
        with self._transaction(_path=frame):
            self.con.execute("""INSERT INTO path_costs SELECT feature, version, path, seconds, pairs, measured_at FROM _path
                                ON CONFLICT (feature, version, path) DO UPDATE SET seconds = excluded.seconds,
                                pairs = excluded.pairs, measured_at = excluded.measured_at""")

    def path_cost(self, specs, path: str) -> dict[str, float]:
        """Feature -> seconds per 1,000 pairs by ``path`` (:meth:`record_path_cost`), for the specs that have
        a measurement (none in a store written before path costs existed)."""
        if not self.sql("SELECT 1 FROM duckdb_tables() WHERE table_name = 'path_costs'").shape[0]:
            return {}
        df = self.sql("SELECT feature, version, seconds, pairs FROM path_costs WHERE path = ?", [path])
        keep = {(s.name, s.version) for s in specs}
        return {f: 1000 * s / max(int(n), 1) for f, v, s, n in df.itertuples(index=False) if (f, v) in keep}

    def create_view(self, name: str, specs, *, retriever: str = "hybrid") -> str:
        """A wide SQL view ``features_<name>`` (one column per feature) for plain-SQL use."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise UsageError(f"view name must be letters, digits and underscores, found {name!r}")
        cols = ",\n  ".join(
            f"max(f.value) FILTER (WHERE f.feature = '{s.name}' AND f.version = '{s.version}') AS \"{s.name}\""
            for s in specs)
        view = f"features_{name}"
        self.con.execute(
            f"""CREATE OR REPLACE VIEW {view} AS
                SELECT c.qid, c.docno, c.rank, coalesce(r.label, 0) AS label,
                  {cols}
                FROM candidates c JOIN queries q USING (qid) JOIN documents d USING (docno)
                LEFT JOIN qrels r ON r.qid = c.qid AND r.docno = c.docno
                LEFT JOIN features f ON f.qid = c.qid AND f.docno = c.docno
                     AND f.query_hash = q.query_hash AND f.doc_hash = d.doc_hash
                WHERE c.retriever = '{retriever}'
                GROUP BY c.qid, c.docno, c.rank, r.label""")
        return view

    def to_parquet(self, path: str | Path, specs, qids=None, *, retriever: str = "hybrid",
                   partition_by_query: bool = False) -> Path:
        """Export the wide frame to Parquet (one file, or a folder partitioned by qid)."""
        path = Path(path)
        f = self.frame(specs, qids, retriever=retriever)
        if partition_by_query:
            f.to_parquet(path, partition_cols=[QID], index=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            f.to_parquet(path, index=False)
        return path
