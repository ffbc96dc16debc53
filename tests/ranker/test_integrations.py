"""The framework integrations, each through its framework's own API (the real library installed), against
`Scorer.rerank` on the same documents."""

import pytest

from ranker import Scorer
from retrieval.data import load_beir, read_trec_run
from tests.ranker.conftest import lexical_run

QUERY = "coffee bean roast"
TEXTS = ["coffee beans are roasted dark", "a knight opening in chess", "roast coffee bean roast coffee",
         "tea leaves ferment slowly", "coffee and milk culture", "bean soup with coffee"]
# the fourth document is about the query by its title alone; the first stage scored the chess one highest
META = [{"title": "Roasting", "source": "a"}, {"source": "b"}, {"title": "Beans", "timestamp": "2021-03-01"},
        {"title": "Coffee bean roast"}, {"source": "e", "date": "2019-05-01"}, {"title": "Soup"}]
SCORES = [2.0, 9.5, 1.2, 0.9, 0.4, 0.1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return lexical_run(tmp_path_factory.mktemp("integrations"),
                       extra_extractors='[features.extractors.freshness]\nreference_time = "2030-01-01"')[0]


def expected(run_dir, with_scores=True, top_k=None):
    """The Scorer's order (indices into TEXTS) and probabilities for the same documents."""
    docs = []
    for i, (text, meta) in enumerate(zip(TEXTS, META)):
        doc = {"id": str(i), "text": text}
        if meta.get("title"):
            doc["title"] = meta["title"]
        if meta.get("timestamp", meta.get("date")):
            doc["timestamp"] = meta.get("timestamp", meta.get("date"))
        if with_scores:
            doc["score"] = SCORES[i]
        docs.append(doc)
    ranking = Scorer.load(run_dir).rerank(QUERY, docs, top_k=top_k)
    return [int(r.id) for r in ranking], [r.probability for r in ranking]


def test_the_fixture_tells_titles_apart_and_each_framework_item_becomes_a_scorer_document(run_dir):
    """On these documents the titles change the order, so a lost title fails the tests below."""
    order = expected(run_dir)[0]
    untitled = [{"id": str(i), "text": t, "score": s} for i, (t, s) in enumerate(zip(TEXTS, SCORES))]
    assert [int(r.id) for r in Scorer.load(run_dir).rerank(QUERY, untitled)] != order
    from ranker.integrations import scorer_document

    assert scorer_document(4, "text", {"title": "T", "date": "2019-05-01", "x": 1}, 1.5) == \
        {"id": "4", "text": "text", "title": "T", "timestamp": "2019-05-01", "score": 1.5}
    assert scorer_document(0, "t", {"title": ""}, float("nan")) == {"id": "0", "text": "t"}


def test_langchain_compressor_orders_as_the_scorer_and_keeps_metadata(run_dir):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ranker.integrations.langchain import FusionLTRCompressor

    docs = [Document(page_content=t, metadata={**m, "score": s}, id=f"lc{i}")
            for i, (t, m, s) in enumerate(zip(TEXTS, META, SCORES))]
    out = FusionLTRCompressor.from_run(str(run_dir), top_n=4).compress_documents(docs, QUERY)
    order, probs = expected(run_dir, top_k=4)
    assert [TEXTS.index(d.page_content) for d in out] == order
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(probs)
    first = out[0]
    assert first.id == f"lc{order[0]}" and first.metadata["source"] == META[order[0]].get("source")


def test_llamaindex_postprocessor_orders_as_the_scorer(run_dir):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from ranker.integrations.llamaindex import FusionLTRRerank

    nodes = [NodeWithScore(node=TextNode(text=t, metadata=m, id_=f"n{i}"), score=s)
             for i, (t, m, s) in enumerate(zip(TEXTS, META, SCORES))]
    out = FusionLTRRerank.from_run(str(run_dir), top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    order, probs = expected(run_dir)
    assert [n.node.id_ for n in out] == [f"n{i}" for i in order]
    assert [n.score for n in out] == pytest.approx(probs)
    assert out[0].node.metadata == META[order[0]]


def test_haystack_ranker_in_a_pipeline_orders_as_the_scorer(run_dir):
    pytest.importorskip("haystack")
    from haystack import Document, Pipeline

    from ranker.integrations.haystack import FusionLTRRanker

    pipe = Pipeline()
    pipe.add_component("ranker", FusionLTRRanker(str(run_dir), top_k=3))
    docs = [Document(id=f"h{i}", content=t, meta=m, score=s) for i, (t, m, s) in enumerate(zip(TEXTS, META, SCORES))]
    out = pipe.run({"ranker": {"query": QUERY, "documents": docs}})["ranker"]["documents"]
    order, probs = expected(run_dir, top_k=3)
    assert [d.id for d in out] == [f"h{i}" for i in order]
    assert [d.score for d in out] == pytest.approx(probs)
    assert out[0].meta == META[order[0]] and docs[order[0]].score == SCORES[order[0]]  # the input is not changed


def test_pyterrier_transformer_in_an_experiment(run_dir):
    pt = pytest.importorskip("pyterrier")
    from ranker.integrations.pyterrier import FusionLTRTransformer

    ds = load_beir(str(run_dir.parent / "gen"))
    topics, qrels = ds.split("test")
    corpus = ds.corpus.set_index("docno")
    first = read_trec_run(run_dir / "retrieval" / "bm25.test.trec")
    frame = first.merge(topics, on="qid").assign(rank=lambda f: f["rank"] - 1)  # PyTerrier ranks from 0
    frame["text"] = corpus.loc[frame.docno, "text"].to_numpy()
    bm25 = pt.Transformer.from_df(frame[["qid", "query", "docno", "text", "score", "rank"]])
    fusion = FusionLTRTransformer(str(run_dir))
    table = pt.Experiment([bm25, bm25 >> fusion], topics[["qid", "query"]],
                          qrels.rename(columns={"label": "label"}), eval_metrics=["ndcg_cut_10"], names=["bm25", "fusion"])
    assert list(table["name"]) == ["bm25", "fusion"] and table["ndcg_cut_10"].notna().all()
    # one query's order: the Scorer's, given the same texts, ranks and scores
    out = (bm25 >> fusion).transform(topics[topics.qid == "q25"][["qid", "query"]])
    part = frame[frame.qid == "q25"].sort_values("rank")
    docs = [{"id": d, "text": t, "rank": i + 1, "score": s} for i, (d, t, s) in enumerate(zip(part.docno, part.text, part.score))]
    assert out.docno.tolist() == [r.id for r in Scorer.load(run_dir).rerank(part["query"].iloc[0], docs)]
    assert out["rank"].tolist() == list(range(len(out)))
    with pytest.raises(Exception, match=r"lacks columns \['text'\]"):
        fusion.transform(frame.drop(columns="text"))
