"""The interaction log: ingest is idempotent by event id, refuses each bad line by file, line and field,
and keeps the rest."""

import json

import pandas as pd

from features.events import impressions_frame, ingest
from features.store import FeatureStore
from ranker.cli import main

IMPRESSIONS = [
    {"type": "impression", "id": "i1", "time": "2026-05-01T10:00:00Z", "query": "statins and LDL", "qid": "q1",
     "docs": ["d3", "d1", "d9"], "model": "runs/demo", "user": "u1", "session": "s1"},
    {"type": "impression", "id": "i2", "time": "2026-05-01T11:00:00+02:00", "query": "aspirin", "docs": ["d1", "d2"],
     "explored": True},
]
INTERACTIONS = [
    {"type": "interaction", "id": "e1", "impression": "i1", "doc": "d1", "kind": "click",
     "time": "2026-05-01T10:00:04Z", "position": 2},
    {"type": "interaction", "id": "e2", "impression": "i1", "doc": "d1", "kind": "dwell", "value": 31.5,
     "time": "2026-05-01T10:00:40Z"},
    {"type": "interaction", "id": "e3", "impression": "i2", "doc": "d2", "kind": "click", "time": "2026-05-01T09:00:01Z"},
]
BAD = {  # line -> (field named, the event)
    "impression": ({"type": "interaction", "id": "b1", "impression": "nope", "doc": "d1", "kind": "click",
                    "time": "2026-05-01T10:00:05Z"}),
    "doc": ({"type": "interaction", "id": "b2", "impression": "i1", "doc": "d2", "kind": "click",
             "time": "2026-05-01T10:00:05Z"}),
    "position": ({"type": "interaction", "id": "b3", "impression": "i1", "doc": "d9", "kind": "click",
                  "time": "2026-05-01T10:00:05Z", "position": 4}),
    "time": ({"type": "interaction", "id": "b4", "impression": "i1", "doc": "d9", "kind": "click",
              "time": "2026-05-01T09:59:59Z"}),
    "query": ({"type": "impression", "id": "b5", "time": "2026-05-01T10:00:00Z", "docs": ["d1"]}),
    "docs": ({"type": "impression", "id": "b6", "time": "2026-05-01T10:00:00Z", "query": "x", "docs": ["d1", "d1"]}),
    "type": ({"type": "view", "id": "b7"}),
}


def write_jsonl(path, events, extra_lines=()):
    path.write_text("\n".join([json.dumps(e) for e in events] + list(extra_lines)) + "\n")
    return path


def counts(store_path):
    with FeatureStore(store_path, read_only=True) as store:
        return tuple(int(store.sql(f"SELECT count(*) AS n FROM {t}")["n"][0])
                     for t in ("impressions", "impression_docs", "interactions"))


def test_ingest_stores_good_events_refuses_each_bad_line_by_name_and_is_idempotent(tmp_path):
    # interactions before their impressions in the file: impressions are read first
    events = INTERACTIONS + list(BAD.values()) + IMPRESSIONS
    path = write_jsonl(tmp_path / "log.jsonl", events, extra_lines=["{not json"])
    path.write_bytes(path.read_bytes() + b'{"type": "impression", "id": "\xff"}\n')  # not UTF-8
    store = tmp_path / "features.duckdb"
    report = ingest(store, [path], log=lambda *_: None)
    assert (report.impressions, report.interactions, report.duplicates) == (2, 3, 0)
    assert len(report.refused) == len(BAD) + 2
    for k, (name, _) in enumerate(BAD.items()):
        line = len(INTERACTIONS) + k + 1
        assert any(r.startswith(f"{path}:{line}: {name}: ") for r in report.refused), (name, report.refused)
    assert report.refused[-2].startswith(f"{path}:{len(events) + 1}: line: expected a JSON object")
    assert report.refused[-1] == f"{path}:{len(events) + 2}: line: expected UTF-8 text, found byte 0xff at column 31"
    assert counts(store) == (2, 5, 3)
    with FeatureStore(store, read_only=True) as s:
        docs = s.sql("SELECT position, docno FROM impression_docs WHERE impression_id = 'i1' ORDER BY position")
        t = s.sql("SELECT time FROM impressions WHERE impression_id = 'i2'")["time"][0]
        dwell = s.sql("SELECT value FROM interactions WHERE event_id = 'e2'")["value"][0]
    assert docs["docno"].tolist() == ["d3", "d1", "d9"] and docs["position"].tolist() == [1, 2, 3]
    assert pd.Timestamp(t) == pd.Timestamp("2026-05-01T09:00:00Z") and dwell == 31.5  # stored in UTC
    again = ingest(store, [path], log=lambda *_: None)  # the same file twice: nothing stored twice
    assert (again.impressions, again.interactions, again.duplicates) == (0, 0, 5)
    assert counts(store) == (2, 5, 3)


def test_an_interaction_may_refer_to_an_impression_stored_by_an_earlier_ingest(tmp_path):
    store = tmp_path / "features.duckdb"
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", IMPRESSIONS)], log=lambda *_: None)
    report = ingest(store, [write_jsonl(tmp_path / "b.jsonl", INTERACTIONS + [BAD["time"]])], log=lambda *_: None)
    assert report.interactions == 3 and len(report.refused) == 1 and ": time: " in report.refused[0]
    with FeatureStore(store, read_only=True) as s:
        shown = impressions_frame(s)
    clicked = shown[shown["clicked"]]
    assert sorted(zip(clicked["impression_id"], clicked["position"])) == [("i1", 2), ("i2", 2)]


def test_parquet_events_are_read_like_jsonl(tmp_path):
    store = tmp_path / "features.duckdb"
    pd.DataFrame(IMPRESSIONS).to_parquet(tmp_path / "imp.parquet")
    pd.DataFrame(INTERACTIONS).to_parquet(tmp_path / "int.parquet")
    report = ingest(store, [tmp_path / "int.parquet", tmp_path / "imp.parquet"], log=lambda *_: None)
    assert (report.impressions, report.interactions, report.refused) == (2, 3, [])
    assert counts(store) == (2, 5, 3)


def test_events_ingest_command_reports_and_fails_when_a_line_is_refused(tmp_path, capsys):
    store = tmp_path / "features.duckdb"
    good = write_jsonl(tmp_path / "good.jsonl", IMPRESSIONS + INTERACTIONS)
    assert main(["events", "ingest", str(good), "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"impressions": 2, "interactions": 3,
                                                                    "duplicates": 0, "refused": 0}
    bad = write_jsonl(tmp_path / "bad.jsonl", [BAD["doc"]])
    assert main(["events", "ingest", str(bad), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: doc: document 'd2' was not shown" in err and "1 line(s) refused" in err
    assert main(["events", "ingest", str(good)]) == 2  # neither --config nor --store
    assert "give the run's --config or a --store" in capsys.readouterr().err


def test_ingest_in_small_chunks_stores_and_refuses_the_same(tmp_path):
    # repeats across chunks: an impression and an interaction twice, a chunk of 2 events apart
    events = IMPRESSIONS + INTERACTIONS + list(BAD.values()) + [IMPRESSIONS[0], INTERACTIONS[0]]
    path = write_jsonl(tmp_path / "log.jsonl", events)
    whole = ingest(tmp_path / "a.duckdb", [path], log=lambda *_: None)
    small = ingest(tmp_path / "b.duckdb", [path], log=lambda *_: None, chunk=2)
    assert (small.impressions, small.interactions, small.duplicates) == (2, 3, 2)
    assert small.as_dict() == whole.as_dict() and small.refused == whole.refused and len(whole.refused) == len(BAD)
    assert counts(tmp_path / "b.duckdb") == counts(tmp_path / "a.duckdb") == (2, 5, 3)
