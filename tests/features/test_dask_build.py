"""The feature build on a 2-worker LocalCluster: the values of a local build, and a killed worker costs
only its unfinished partition."""

import pytest

from features import base as fbase
from features.build import build
from features.store import FeatureStore
from retrieval import BM25Retriever, load_beir
from tests.ranker.conftest import generated_dataset

distributed = pytest.importorskip("distributed")
dask_build = pytest.importorskip("features.dask_build")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    ds = load_beir(generated_dataset(tmp_path_factory.mktemp("dask") / "gen"))
    run = BM25Retriever().index(ds.corpus).retrieve(ds.queries, 20).assign(retriever="bm25")
    return ds, run


def fill(path, ds, run):
    store = FeatureStore(path)
    store.put_documents(ds.corpus)
    store.put_queries(ds.queries)
    store.put_candidates(run)
    return store


def extractors(ds):
    exts = [fbase.create("first_stage", {"retrievers": []}), fbase.create("bm25"), fbase.create("coverage"),
            fbase.create("length"), fbase.create("freshness", {"reference_time": "2030-01-01"})]
    for e in exts:
        e.fit(ds.corpus)
    return exts


def test_the_dask_build_writes_the_values_of_a_local_build(client, dataset, tmp_path):
    ds, run = dataset
    with fill(tmp_path / "local.duckdb", ds, run) as local, fill(tmp_path / "dask.duckdb", ds, run) as remote:
        exts = extractors(ds)
        build(local, local.pairs(retriever="bm25"), exts, progress=False)
        reports = dask_build.dask_build(remote, remote.pairs(retriever="bm25"), exts, client,
                                        parts_dir=tmp_path / "parts", partitions=5, progress=False)
        specs = [s for e in exts for s in e.specs]
        a, b = local.frame(specs, retriever="bm25"), remote.frame(specs, retriever="bm25")
        assert len(a) == len(b) == len(run) and a[["qid", "docno"]].equals(b[["qid", "docno"]])
        for s in specs:
            assert a[s.name].isna().equals(b[s.name].isna()), s.name  # the same NaN pattern
            assert (a[s.name] - b[s.name]).abs().max() < 1e-12 or a[s.name].isna().all(), s.name
        assert [r.computed for r in reports] == [len(run)] * len(exts)
        cost = remote.cost(specs)
        assert set(cost["feature"]) == {s.name for s in specs} and (cost["pairs"] > 0).all()
        again = dask_build.dask_build(remote, remote.pairs(retriever="bm25"), exts, client,
                                      parts_dir=tmp_path / "parts", partitions=5, progress=False)
        assert [r.computed for r in again] == [len(run), 0, 0, 0, 0]  # cached; first_stage is a copy
        assert not list((tmp_path / "parts").glob("*.parquet"))


def test_a_killed_worker_loses_only_its_partition_and_the_rerun_computes_the_rest(client, dataset, tmp_path):
    ds, run = dataset
    fbase.register("killonce", "tests.features.dask_helpers:KillOnceExtractor")
    log = tmp_path / "computed.log"
    ext = fbase.create("killonce", {"log": str(log), "kill_qid": "q7", "marker": str(tmp_path / "died")})
    with fill(tmp_path / "f.duckdb", ds, run) as store:
        pairs = store.pairs(retriever="bm25")
        with pytest.raises(Exception):  # the worker computing q7 dies; allowed-failures 0: the build stops
            with distributed.Client(client.scheduler.address) as strict:
                strict.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
                dask_build.dask_build(store, pairs, [ext], strict, parts_dir=tmp_path / "parts", partitions=4,
                                      progress=False)
        stored = set(store.sql("SELECT qid || ' ' || docno AS k FROM features WHERE feature = 'words'")["k"])
        leftover = list((tmp_path / "parts").glob("*.parquet"))  # finished after the failure: kept, not lost
        assert 0 < len(stored) < len(pairs) or leftover
        log.write_text("")
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 3))
        client.wait_for_workers(2, timeout=60)
        dask_build.dask_build(store, pairs, [ext], client, parts_dir=tmp_path / "parts", partitions=4, progress=False)
        rerun = log.read_text().splitlines()
        kept = set(store.sql("SELECT qid || ' ' || docno AS k FROM features WHERE feature = 'words'")["k"])
        assert len(kept) == len(pairs) and store.nan_counts(ext.specs, retriever="bm25")["words"] == 0
        assert len(rerun) == len(set(rerun))  # nothing computed twice in the rerun
        assert not set(rerun) & stored  # nothing the first run stored was computed again
        killed = {f"q7 {d}" for d in pairs.loc[pairs["qid"] == "q7", "docno"]}
        assert killed <= set(rerun)  # the dead worker's partition was computed by the rerun
        assert len(rerun) < len(pairs)  # ... and not everything
