"""The interaction log: what an app showed (impressions) and what people did with it (interactions), kept
in the feature store's DuckDB file beside the features they become.

Tables (plain SQL)::

    impressions      (impression_id, time, qid, query, model, user_id, session_id, explored, source, interleaved)
    impression_docs  (impression_id, position, docno, team)    the list shown, position 1 first
    interactions     (event_id, impression_id, docno, kind, time, value, source)

``explored``: the list was randomised for exploration (so examination can be estimated from it);
``source``: the file and line the event came from; an interleaved impression (two models compared by team
draft, :mod:`ranker.interleaving`) has ``interleaved`` (JSON: the models of teams "a" and "b") and each
shown document's ``team``. Times are stored in UTC.

Event files are JSON lines, or Parquet files with the same fields as columns, one event each::

    {"type": "impression", "id": "i1", "time": "2026-05-01T10:00:00Z", "query": "statins and LDL",
     "qid": "q7", "docs": ["d3", "d1", "d9"], "model": "runs/demo", "user": "u1", "session": "s1",
     "explored": false}
    {"type": "interaction", "id": "e1", "impression": "i1", "doc": "d1", "kind": "click",
     "time": "2026-05-01T10:00:04Z", "value": 12.5, "position": 2}

An impression needs ``id``, ``time``, ``docs`` (ids in the order shown, no repeats) and ``query`` or
``qid``; an interaction ``id``, ``impression``, ``doc``, ``kind`` and ``time`` (``value``: e.g. dwell
seconds; ``position``: checked against the list shown). A time without a zone is UTC.

:func:`ingest` is idempotent by event id (an id already stored is skipped, so ingesting a file twice
stores nothing twice) and refuses each bad line by file, line and field (an interaction for an unknown
impression, a document not shown, a position out of range, a time before its impression's), keeping the
rest. All impressions are read before any interaction, so the order of the files does not matter.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from retrieval.errors import MissingInputError, UsageError

from .store import FeatureStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (impression_id VARCHAR PRIMARY KEY, time TIMESTAMPTZ NOT NULL, qid VARCHAR,
    query VARCHAR, model VARCHAR, user_id VARCHAR, session_id VARCHAR, explored BOOLEAN, source VARCHAR,
    interleaved VARCHAR);
CREATE TABLE IF NOT EXISTS impression_docs (impression_id VARCHAR, position INTEGER, docno VARCHAR, team VARCHAR,
    PRIMARY KEY (impression_id, position));
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS interleaved VARCHAR;
ALTER TABLE impression_docs ADD COLUMN IF NOT EXISTS team VARCHAR;
CREATE TABLE IF NOT EXISTS interactions (event_id VARCHAR PRIMARY KEY, impression_id VARCHAR NOT NULL,
    docno VARCHAR NOT NULL, kind VARCHAR NOT NULL, time TIMESTAMPTZ NOT NULL, value DOUBLE, source VARCHAR);
"""

IMPRESSION_FIELDS = ("type", "id", "time", "query", "qid", "docs", "model", "user", "session", "explored", "teams",
                     "models")
INTERACTION_FIELDS = ("type", "id", "impression", "doc", "kind", "time", "value", "position")


class BadEvent(UsageError):
    """One event line that cannot be stored: names the field, what was expected and what was found."""

    def __init__(self, field_: str, message: str):
        super().__init__(f"{field_}: {message}")
        self.field = field_


@dataclass
class IngestReport:
    """What one :func:`ingest` stored, skipped (ids already stored, or repeated) and refused."""

    impressions: int = 0
    interactions: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)  # "file:line: field: message", in file order

    def as_dict(self) -> dict:
        return {"impressions": self.impressions, "interactions": self.interactions, "duplicates": self.duplicates,
                "refused": len(self.refused)}


def create(store: FeatureStore) -> None:
    """Create the log's tables in ``store`` if they are not there."""
    store.con.execute(SCHEMA)


# ----------------------------------------------------------------------------------- reading files
def read_events(path: str | Path):
    """``(line, event)`` of each event in a JSONL or Parquet file; a line that is not a JSON object comes
    as ``(line, BadEvent)``. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such event file")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        for i, row in enumerate(frame.to_dict(orient="records"), start=1):
            yield i, {k: _plain(v) for k, v in row.items() if not _missing(v)}
        return
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield i, BadEvent("line", f"expected UTF-8 text, found byte {raw[exc.start]:#04x} at column {exc.start + 1}")
                continue
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                yield i, BadEvent("line", f"expected a JSON object, found invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            yield i, event if isinstance(event, dict) else BadEvent("line", f"expected a JSON object, found "
                                                                          f"{type(event).__name__}")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    """A Parquet cell as JSON would give it (arrays as lists, numpy scalars as Python ones)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# ----------------------------------------------------------------------------------- checking events
def _text(event: dict, name: str, *, required: bool = True) -> str | None:
    value = event.get(name)
    if value is None:
        if required:
            raise BadEvent(name, "missing (expected a non-empty string)")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise BadEvent(name, f"expected a non-empty string, found {value!r}")
    return str(value)


def _time(event: dict) -> datetime:
    value = event.get("time")
    if value is None:
        raise BadEvent("time", "missing (expected an ISO 8601 time, e.g. 2026-05-01T10:00:00Z)")
    if isinstance(value, str):  # the common case, fast: Python's own ISO 8601 reader, pandas' for the rest
        try:
            fast = datetime.fromisoformat(value)
        except ValueError:
            fast = None
        if fast is not None:
            return fast.replace(tzinfo=timezone.utc) if fast.tzinfo is None else fast.astimezone(timezone.utc)
    if isinstance(value, datetime) or isinstance(value, pd.Timestamp):
        stamp = pd.Timestamp(value)
    elif isinstance(value, str):
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise BadEvent("time", f"expected an ISO 8601 time (e.g. 2026-05-01T10:00:00Z), found {value!r}") from None
    else:
        raise BadEvent("time", f"expected an ISO 8601 time string, found {value!r}")
    if pd.isna(stamp):
        raise BadEvent("time", f"expected an ISO 8601 time, found {value!r}")
    stamp = stamp.tz_localize(timezone.utc) if stamp.tzinfo is None else stamp.tz_convert(timezone.utc)
    return stamp.to_pydatetime()


def _unknown(event: dict, allowed) -> None:
    unknown = sorted(set(event) - set(allowed))
    if unknown:
        raise BadEvent(unknown[0], f"unknown field; an {event.get('type')} has {sorted(set(allowed) - {'type'})}")


def check_impression(event: dict) -> dict:
    """An impression event as a row (and its list), or :class:`BadEvent`."""
    _unknown(event, IMPRESSION_FIELDS)
    row = {"impression_id": _text(event, "id"), "time": _time(event), "qid": _text(event, "qid", required=False),
           "query": _text(event, "query", required=False), "model": _text(event, "model", required=False),
           "user_id": _text(event, "user", required=False), "session_id": _text(event, "session", required=False)}
    if row["qid"] is None and row["query"] is None:
        raise BadEvent("query", "missing (an impression needs its query text, its qid, or both)")
    docs = event.get("docs")
    if not isinstance(docs, list) or not docs:
        raise BadEvent("docs", f"expected a non-empty list of document ids in the order shown, found {docs!r}")
    ids = []
    for k, d in enumerate(docs):
        if isinstance(d, bool) or not isinstance(d, (str, int)) or not str(d).strip():
            raise BadEvent(f"docs[{k}]", f"expected a document id (a non-empty string), found {d!r}")
        ids.append(str(d))
    repeated = sorted({d for d in ids if ids.count(d) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise BadEvent("docs", f"each document is shown once; {repeated} appear more than once")
    explored = event.get("explored", False)
    if not isinstance(explored, bool):
        raise BadEvent("explored", f"expected true or false, found {explored!r}")
    row["explored"] = explored
    teams, models = event.get("teams"), event.get("models")
    if (teams is None) != (models is None):
        raise BadEvent("teams" if teams is None else "models", "an interleaved impression has both teams and models")
    if teams is not None:
        if not isinstance(teams, list) or len(teams) != len(ids) or any(t not in ("a", "b") for t in teams):
            raise BadEvent("teams", f"expected \"a\" or \"b\" for each of the {len(ids)} documents, found {teams!r}")
        if not isinstance(models, dict) or set(models) != {"a", "b"} or not all(isinstance(v, str) for v in models.values()):
            raise BadEvent("models", f"expected {{\"a\": model, \"b\": model}}, found {models!r}")
    row["interleaved"] = json.dumps(models, sort_keys=True) if models is not None else None
    return row | {"docs": ids, "teams": teams or [None] * len(ids)}


def check_interaction(event: dict, shown: dict[str, tuple[datetime, list[str]]]) -> dict:
    """An interaction event as a row, or :class:`BadEvent`; ``shown``: impression id -> (time, docs)."""
    _unknown(event, INTERACTION_FIELDS)
    row = {"event_id": _text(event, "id"), "impression_id": _text(event, "impression"), "docno": _text(event, "doc"),
           "kind": _text(event, "kind"), "time": _time(event)}
    if row["impression_id"] not in shown:
        raise BadEvent("impression", f"unknown impression {row['impression_id']!r} (not stored, and not in the "
                                     "files ingested)")
    at, docs = shown[row["impression_id"]]
    if row["docno"] not in docs:
        raise BadEvent("doc", f"document {row['docno']!r} was not shown in impression {row['impression_id']!r} "
                              f"({len(docs)} documents shown)")
    if row["time"] < at:
        raise BadEvent("time", f"{row['time'].isoformat()} is before its impression's time {at.isoformat()}")
    position = event.get("position")
    if isinstance(position, float) and position.is_integer():  # a Parquet column with gaps is float
        position = int(position)
    if position is not None:
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= len(docs):
            raise BadEvent("position", f"expected a position from 1 to {len(docs)} (the list shown), found {position!r}")
        if docs[position - 1] != row["docno"]:
            raise BadEvent("position", f"{row['docno']!r} was shown at position {docs.index(row['docno']) + 1}, "
                                       f"found {position}")
    value = event.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise BadEvent("value", f"expected a finite number, found {value!r}")
    return row | {"value": None if value is None else float(value)}


# ----------------------------------------------------------------------------------- ingesting
#: Events checked and stored at a time: memory stays bounded whatever the size of the files.
CHUNK = 50_000


def ingest(store_path: str | Path, files, *, log=print, chunk: int = CHUNK) -> IngestReport:
    """Store the events of ``files`` (JSONL or Parquet, see the module docstring) in the store at
    ``store_path``: every file's impressions first, then their interactions, ``chunk`` events at a time, each
    chunk in a transaction of its own (the files are read twice, never held whole, and memory stays bounded);
    ids already stored are skipped, so an interrupted ingest keeps what it stored and running it again stores
    the rest; each bad line is refused by file, line and field and the rest are kept."""
    report = IngestReport()
    files = list(files)
    names = [str(p) for p in files]
    refused = []  # ((file number, line), error)

    def source(where) -> str:
        return f"{names[where[0]]}:{where[1]}"

    def events(kind: str):
        """``(where, event)`` of each line of type ``kind``; a line of no known type is refused (once)."""
        for n, path in enumerate(files):
            for i, event in read_events(path):
                if isinstance(event, BadEvent):
                    if kind == "impression":
                        refused.append(((n, i), event))
                elif event.get("type") not in ("impression", "interaction"):
                    if kind == "impression":
                        refused.append(((n, i), BadEvent("type", f"expected \"impression\" or \"interaction\", "
                                                                 f"found {event.get('type')!r}")))
                elif event["type"] == kind:
                    yield (n, i), event

    with FeatureStore(store_path) as store:
        create(store)
        for kind, put in (("impression", _store_impressions), ("interaction", _store_interactions)):
            for part in _batches(events(kind), chunk):
                store.con.execute("BEGIN TRANSACTION")
                try:
                    stored = put(store, part, refused, report, source)
                    store.con.execute("COMMIT")
                except BaseException:
                    store.con.execute("ROLLBACK")
                    raise
                if kind == "impression":
                    report.impressions += stored
                else:
                    report.interactions += stored
    report.refused = [f"{source(where)}: {exc}" for where, exc in sorted(refused, key=lambda r: r[0])]
    for line in report.refused:
        log(f"refused {line}")
    return report


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stored_ids(store: FeatureStore, table: str, column: str, ids) -> set[str]:
    """Those of ``ids`` already in ``table`` (this transaction's earlier chunks included)."""
    ids = sorted({str(i) for i in ids if isinstance(i, (str, int)) and not isinstance(i, bool)})
    if not ids:
        return set()
    store.con.register("_ids", pd.DataFrame({"id": ids}))
    found = store.sql(f"SELECT {column} FROM {table} WHERE {column} IN (SELECT id FROM _ids)")
    return set(found[column].astype(str))


def _store_impressions(store: FeatureStore, part, refused, report: IngestReport, source) -> int:
    known = _stored_ids(store, "impressions", "impression_id", (e.get("id") for _, e in part))
    impressions, listed, here = [], [], set()
    for where, event in part:
        try:
            row = check_impression(event)
        except BadEvent as exc:
            refused.append((where, exc))
            continue
        iid = row["impression_id"]
        if iid in known or iid in here:
            report.duplicates += 1
            continue
        here.add(iid)
        listed += [(iid, k + 1, d, t) for k, (d, t) in enumerate(zip(row.pop("docs"), row.pop("teams")))]
        impressions.append(row | {"source": source(where)})
    if impressions:
        store.con.register("_imp", pd.DataFrame(impressions))
        store.con.execute("INSERT INTO impressions SELECT impression_id, time, qid, query, model, user_id, "
                          "session_id, explored, source, interleaved FROM _imp")
        store.con.register("_docs", pd.DataFrame(listed, columns=["impression_id", "position", "docno", "team"]))
        store.con.execute("INSERT INTO impression_docs SELECT impression_id, position, docno, team FROM _docs")
    return len(impressions)


def _store_interactions(store: FeatureStore, part, refused, report: IngestReport, source) -> int:
    seen = _stored_ids(store, "interactions", "event_id", (e.get("id") for _, e in part))
    todo = []  # interactions whose id is not stored yet (a stored id is skipped unread, as ingested before)
    for where, event in part:
        if isinstance(event.get("id"), (str, int)) and str(event["id"]) in seen:
            report.duplicates += 1
        else:
            todo.append((where, event))
    lists = _stored_lists(store, {str(e["impression"]) for _, e in todo
                                  if isinstance(e.get("impression"), (str, int)) and not isinstance(e["impression"], bool)})
    interactions = []
    for where, event in todo:
        try:
            row = check_interaction(event, lists)
        except BadEvent as exc:
            refused.append((where, exc))
            continue
        if row["event_id"] in seen:  # repeated within this chunk
            report.duplicates += 1
            continue
        seen.add(row["event_id"])
        interactions.append(row | {"source": source(where)})
    if interactions:
        store.con.register("_int", pd.DataFrame(interactions))
        store.con.execute("INSERT INTO interactions SELECT event_id, impression_id, docno, kind, time, value, "
                          "source FROM _int")
    return len(interactions)


def _stored_lists(store: FeatureStore, ids) -> dict[str, tuple[datetime, list[str]]]:
    """Impression id -> (time, docs in order shown) of the stored impressions among ``ids``."""
    ids = sorted(i for i in ids if i is not None)
    if not ids:
        return {}
    store.con.register("_ids", pd.DataFrame({"impression_id": [str(i) for i in ids]}))
    rows = store.con.execute("SELECT i.impression_id, i.time, d.docno FROM impressions i JOIN impression_docs d "
                             "USING (impression_id) WHERE i.impression_id IN (SELECT impression_id FROM _ids) "
                             "ORDER BY i.impression_id, d.position").fetchall()  # Python values: no per-group frames
    out = {}
    for iid, at, docno in rows:
        if iid not in out:
            out[iid] = (at.astimezone(timezone.utc), [])
        out[iid][1].append(str(docno))
    return out


def has_log(store: FeatureStore) -> bool:
    """Whether ``store`` holds the interaction log's tables."""
    return bool(store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'impressions'")["n"][0])


def impressions_frame(store: FeatureStore, kinds=("click",)) -> pd.DataFrame:
    """Every stored impression's shown documents with their clicks: one row per (impression, position),
    with ``clicked`` (any interaction of one of ``kinds`` on it) and the impression's time, query and
    ``explored``, by time."""
    if not has_log(store):
        raise MissingInputError(f"{store.path}: no interaction log (run `fusion-ltr events ingest FILE...` first)")
    store.con.register("_kinds", pd.DataFrame({"kind": [str(k) for k in kinds]}))
    return store.sql(
        "SELECT i.impression_id, i.time, i.qid, i.query, i.model, i.explored, d.position, d.docno, "
        "EXISTS (SELECT 1 FROM interactions x WHERE x.impression_id = d.impression_id AND x.docno = d.docno "
        "AND x.kind IN (SELECT kind FROM _kinds)) AS clicked FROM impressions i JOIN impression_docs d "
        "USING (impression_id) ORDER BY i.time, i.impression_id, d.position")


def fingerprint(store: FeatureStore) -> list:
    """What identifies the log's content for a step's cache: its events' counts and latest times (events are
    only ever added)."""
    if not has_log(store):
        return [0, 0]
    imp = store.sql("SELECT count(*) AS n, max(time) AS t FROM impressions")
    act = store.sql("SELECT count(*) AS n, max(time) AS t FROM interactions")
    return [int(imp["n"][0]), str(imp["t"][0]), int(act["n"][0]), str(act["t"][0])]


class EventWriter:
    """Appends events (the ingest format) to a JSON-lines file of its own in ``folder``, one per process
    (``events-<host>-<pid>-<time>.jsonl``): each :meth:`write` is flushed and fsynced before it returns, so an
    event a caller acknowledged survives a killed process; `fusion-ltr events ingest` then stores the
    folder's files (idempotent, so a file may be ingested again as it grows)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.path = self.folder / f"events-{socket.gethostname()}-{os.getpid()}-{stamp}.jsonl"
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, *events: dict) -> None:
        """Append ``events``, durable on return."""
        text = "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)
        with self._lock:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()
