"""Feedback features from the interaction log: hand-computed values, point in time (a later event never
changes an earlier moment's value), the snapshot saved and loaded, and the log read from a store."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.base import create
from features.events import ingest
from features.feedback import DAY_NS, FeedbackExtractor, epoch_ns
from features.store import FeatureStore
from retrieval.params import ConfigError

T0 = pd.Timestamp("2026-05-01T00:00:00Z")


def at(days: float) -> pd.Timestamp:
    return (T0 + pd.Timedelta(days=days)).round("us")


def log(tmp_path, events):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e, default=str) + "\n" for e in events))
    store = tmp_path / "store.duckdb"
    report = ingest(store, [path], log=lambda *a: None)
    assert not report.refused, report.refused
    return store


def impression(i, days, query, docs):
    return {"type": "impression", "id": i, "time": at(days).isoformat(), "query": query, "docs": docs}


def click(e, i, doc, days, kind="click"):
    return {"type": "interaction", "id": e, "impression": i, "doc": doc, "kind": kind, "time": at(days).isoformat()}


def snapshot(store, **params):
    with FeatureStore(store) as s:
        return FeedbackExtractor(**params).read_log(s)


PAIRS = pd.DataFrame({"query": ["Statins and  LDL", "statins and ldl", "aspirin"], "docno": ["d1", "d2", "d1"]})


@pytest.fixture
def small(tmp_path):
    # d1 shown at day 0, 3 and 20 and clicked at day 0 and 20 (twice in one impression: counted once), d2
    # shown at day 0 and 3 and never clicked; one "copy" on d2 (not a counted kind)
    return log(tmp_path, [
        impression("i1", 0, "statins and LDL", ["d1", "d2"]), click("c1", "i1", "d1", 0.001),
        impression("i2", 3, "STATINS and ldl", ["d2", "d1"]), click("x2", "i2", "d2", 3.001, kind="copy"),
        impression("i3", 20, "aspirin", ["d1"]), click("c3", "i3", "d1", 20.001), click("c4", "i3", "d1", 20.002),
    ])


def test_values_by_hand_before_each_moment(small):
    ext = snapshot(small, prior_strength=2.0, window_days=30, recent_days=7)
    v = ext.compute_at(PAIRS, [at(10)] * 3)  # before day 10: 4 impressions of d1/d2, 1 click (d1 at day 0)
    prior = (1 + 1) / (4 + 2)  # the log's own rate, Laplace-smoothed, before t
    assert v["ctr_doc"][0] == pytest.approx((1 + 2 * prior) / (2 + 2))  # d1: shown twice, clicked once
    assert v["ctr_doc"][1] == pytest.approx((0 + 2 * prior) / (2 + 2))  # d2: shown twice, never clicked
    assert v["ctr_query_doc"][0] == pytest.approx((1 + 2 * prior) / (2 + 2))  # the text normalised: same query
    assert v["ctr_query_doc"][2] == pytest.approx(prior)  # ("aspirin", d1): no impression before day 10
    assert v["shown_doc"].tolist() == pytest.approx([np.log(3), np.log(3), np.log(3)])
    assert v["shown_query_doc"].tolist() == pytest.approx([np.log(3), np.log(3), 0.0])
    assert v["last_click_days"][0] == pytest.approx(10 - 0.001) and np.isnan(v["last_click_days"][1])
    # the 7-day window before day 10 holds only day 3's impression: d1 shown once, no click in it
    recent_prior = (0 + 1) / (2 + 2)
    assert v["ctr_doc_recent"][0] == pytest.approx((0 + 2 * recent_prior) / (1 + 2))
    # just after day 20's click: the second interaction on the same (impression, doc) does not count again
    w = ext.compute_at(PAIRS, [at(21)] * 3)
    prior = (2 + 1) / (5 + 2)
    assert w["ctr_doc"][0] == pytest.approx((2 + 2 * prior) / (3 + 2))
    assert w["last_click_days"][0] == pytest.approx(21 - 20.001)


def test_a_query_as_if_never_seen_keeps_only_the_other_queries_history(small):
    ext = snapshot(small, prior_strength=2.0)
    pairs = pd.DataFrame({"query": ["statins and ldl", "aspirin", "statins and ldl"], "docno": ["d1", "d1", "d2"]})
    v = ext.compute_at(pairs, [at(21)] * 3, unseen=[True, True, False])
    prior = (2 + 1) / (5 + 2)  # the log's own rate before day 21 (every query's events)
    # (statins, d1) as new: d1's history from "aspirin" only (i3: shown once, clicked at day 20.001)
    assert v["shown_doc"][0] == pytest.approx(np.log(2)) and v["ctr_doc"][0] == pytest.approx((1 + 2 * prior) / 3)
    assert v["shown_query_doc"][0] == 0 and v["ctr_query_doc"][0] == pytest.approx(prior)
    assert v["last_click_days"][0] == pytest.approx(21 - 20.001)
    # (aspirin, d1) as new: i1 and i2 (shown twice, clicked at day 0.001); its own later click is passed over
    assert v["shown_doc"][1] == pytest.approx(np.log(3)) and v["last_click_days"][1] == pytest.approx(21 - 0.001)
    # a row not marked keeps everything
    same = ext.compute_at(pairs.iloc[[2]], [at(21)])
    assert all(v[n][2] == pytest.approx(same[n][0], nan_ok=True) for n in same)


def test_an_event_at_the_moment_itself_does_not_count(small):
    ext = snapshot(small, prior_strength=0.0)
    v = ext.compute_at(PAIRS, [at(0)] * 3)  # i1 is at day 0 exactly: not before it
    assert v["shown_doc"].tolist() == [0.0, 0.0, 0.0] and np.isnan(v["last_click_days"]).all()
    assert v["ctr_doc"].tolist() == pytest.approx([0.5, 0.5, 0.5])  # nothing seen: the prior, (0 + 1) / (0 + 2)


def test_stored_values_are_at_the_reference_time(small):
    ext = snapshot(small)
    # just after the last event counted (i3's first click, day 20.001; its second one does not count)
    assert ext.state()["reference"] == "2026-05-21T00:01:26.400001+00:00"
    for name, values in ext.compute(PAIRS).items():
        assert np.array_equal(values, ext.compute_at(PAIRS, [ext.reference_ns] * 3)[name], equal_nan=True)
    fixed = snapshot(small, reference_time="2026-05-02")
    assert fixed.compute(PAIRS)["shown_doc"][0] == pytest.approx(np.log(2))
    assert fixed.version != ext.version


def test_the_snapshot_is_saved_and_loaded_with_its_version(small, tmp_path):
    ext = snapshot(small)
    ext.save_state(tmp_path / "state")
    again = create("feedback", ext.config()).load_state(tmp_path / "state")
    assert again.version == ext.version and again.state() == ext.state()
    for name, values in ext.compute(PAIRS).items():
        assert np.array_equal(values, again.compute(PAIRS)[name], equal_nan=True)
    assert create("feedback").version != ext.version  # an empty log is another version
    with pytest.raises(Exception, match="snapshot .* is missing"):
        create("feedback").load_state(tmp_path / "nothing")


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="recent_days <= window_days"):
        FeedbackExtractor(recent_days=40, window_days=30)
    with pytest.raises(ConfigError, match="reference_time: expected an ISO time or 'log'"):
        FeedbackExtractor(reference_time="yesterday")
    with pytest.raises(ConfigError, match="kinds: expected at least one"):
        FeedbackExtractor(kinds=[])


def test_a_store_without_a_log_gives_the_priors(tmp_path):
    with FeatureStore(tmp_path / "s.duckdb") as s:
        ext = FeedbackExtractor().read_log(s)
    v = ext.compute(PAIRS)
    assert v["ctr_doc"].tolist() == [0.5, 0.5, 0.5] and v["shown_doc"].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------- point in time, by property
EVENT = st.tuples(st.integers(0, 40), st.sampled_from(["q a", "q b"]), st.lists(st.sampled_from(["d1", "d2", "d3"]),
                                                                                 min_size=1, max_size=3, unique=True),
                  st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30)), max_size=3))


def events_of(sessions, prefix):
    out = []
    for n, (day, query, docs, clicks) in enumerate(sessions):
        iid = f"{prefix}{n}"
        out.append(impression(iid, day, query, docs))
        out += [click(f"{iid}c{k}", iid, docs[j % len(docs)], day + minutes / 1440) for k, (j, minutes) in
                enumerate(clicks)]
    return out


@settings(max_examples=25, deadline=None)
@given(early=st.lists(EVENT, max_size=6), late=st.lists(EVENT, min_size=1, max_size=6), cut=st.integers(1, 40))
def test_later_events_never_change_an_earlier_moments_value(tmp_path_factory, early, late, cut):
    """The leak test: the values at moment t from a log, and from the same log with more events at or after t
    (impressions, and clicks on earlier impressions), are the same."""
    tmp = tmp_path_factory.mktemp("pit")
    t = at(cut)
    before = [e for e in events_of(early, "e") if pd.Timestamp(e["time"]) < t]
    kept = {e["id"] for e in before if e["type"] == "impression"}
    before = [e for e in before if e["type"] == "impression" or e["impression"] in kept]
    shown = {e["id"]: e["docs"] for e in before if e["type"] == "impression"}
    later = [dict(e, time=(pd.Timestamp(e["time"]) + (t - T0)).isoformat()) for e in events_of(late, "l")]
    late_clicks = [click(f"late{i}", iid, docs[0], cut + 0.5) for i, (iid, docs) in enumerate(shown.items())]
    a = snapshot(log(tmp / "a", before))
    b = snapshot(log(tmp / "b", before + later + late_clicks))
    pairs = pd.DataFrame({"query": ["q a", "q b", "Q  A"], "docno": ["d1", "d2", "d3"]})
    for name, values in a.compute_at(pairs, [t] * 3).items():
        assert np.array_equal(values, b.compute_at(pairs, [t] * 3)[name], equal_nan=True), name


def test_epoch_ns_reads_times_in_any_resolution():
    stamp = pd.Timestamp("2026-05-01T00:00:01Z")
    assert epoch_ns(["2026-05-01T00:00:01Z"])[0] == stamp.value
    assert epoch_ns(pd.Series([stamp]).dt.as_unit("s"))[0] == stamp.value
    assert epoch_ns(np.array([stamp.value]))[0] == stamp.value and DAY_NS == 86_400 * 10**9
