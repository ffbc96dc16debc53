"""Cross-encoder fine-tuning on a tiny hand-made set (real MiniLM weights, real trainer)."""

import json

import numpy as np
import pandas as pd
import pytest
from transformers import TrainerCallback

from features.model_folders import trained_qids
from ranker.training.crossencoder import CETrainingParams, finetune, split_queries, training_groups
from features.crossencoder import CrossEncoderExtractor
from retrieval.params import ConfigError

TOPICS = {
    "cats": ("what do cats eat", "Cats are carnivores and eat meat, fish and mice."),
    "bread": ("how is sourdough bread made", "Sourdough bread is made from flour, water and a starter."),
    "qubits": ("what is a qubit", "A qubit is the basic unit of quantum information."),
    "volcano": ("why do volcanoes erupt", "Volcanoes erupt when magma pressure builds under the crust."),
    "chess": ("how does a knight move in chess", "In chess the knight moves in an L shape."),
    "tides": ("what causes ocean tides", "Tides are caused by the gravity of the moon and the sun."),
}
CORPUS = pd.DataFrame({"docno": list(TOPICS), "title": "", "text": [d for _, d in TOPICS.values()]})
QUERIES = pd.DataFrame({"qid": [f"q_{t}" for t in TOPICS], "query": [q for q, _ in TOPICS.values()]})
QRELS = pd.DataFrame({"qid": QUERIES["qid"], "docno": list(TOPICS), "label": 1})
CANDS = pd.DataFrame([(q, d, r + 1, 1.0, "hybrid") for q in QUERIES["qid"] for r, d in enumerate(TOPICS)],
                     columns=["qid", "docno", "rank", "score", "retriever"])


def test_split_is_disjoint_deterministic_and_stable():
    qids = [str(i) for i in range(1000)]
    ce, ranker = split_queries(qids, 0.5, seed=1)
    assert not set(ce) & set(ranker) and set(ce) | set(ranker) == set(qids)
    assert 400 < len(ranker) < 600
    assert split_queries(qids, 0.5, seed=1) == (ce, ranker)
    ce_more, ranker_more = split_queries(qids + ["new"], 0.5, seed=1)
    assert set(ce) <= set(ce_more) and set(ranker) <= set(ranker_more)  # old queries never move
    assert split_queries(qids, 0.0, seed=1) == (sorted(qids), [])


def test_training_groups_by_hand():
    qrels = pd.DataFrame({"qid": ["q1", "q1", "q1"], "docno": ["a", "b", "c"], "label": [1, 1, 0]})
    cands = pd.DataFrame({"qid": "q1", "docno": ["a", "c", "x", "y", "z"], "rank": [1, 2, 3, 4, 9]})
    corpus = pd.DataFrame({"docno": ["a", "b", "c", "x", "y", "z"], "title": "", "text": list("ABCXYZ")})
    groups = training_groups(pd.DataFrame({"qid": ["q1"], "query": ["?"]}), qrels, cands, corpus,
                             negatives=5, negatives_from=4, seed=0)
    assert [g["docs"][0] for g in groups] == ["A", "B"]  # one group per relevant document
    for g in groups:
        assert sorted(g["docs"][1:]) == ["X", "Y"]  # judged c and rank-9 z are never negatives
        assert g["labels"] == [1.0, 0.0, 0.0]


def test_params_are_checked():
    with pytest.raises(ConfigError, match="expected one of"):
        CETrainingParams(loss="hinge").check()
    with pytest.raises(ConfigError, match="nothing to learn from"):
        CETrainingParams(use_real=False).check()


def groups():
    return training_groups(QUERIES, QRELS, CANDS, CORPUS, negatives=3, negatives_from=6, seed=0)


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_tiny_training_moves_positives_above_negatives(tmp_path, loss):
    params = CETrainingParams(loss=loss, epochs=12, batch_size=2, learning_rate=3e-4, warmup_ratio=0.0,
                              max_length=64, checkpoint_steps=1000, negatives=3, negatives_from=6)
    manifest = finetune(groups(), params, tmp_path / "ce", progress=False)
    assert manifest["data"]["train_qids"] == sorted(QUERIES["qid"]) and manifest["loss"] == loss
    ext = CrossEncoderExtractor(model=str(tmp_path / "ce" / "model"), model_batch_size=16)
    assert ext.trained_qids() == set(QUERIES["qid"])
    scores = ext.score([q for q in QUERIES["query"] for _ in TOPICS], [d for _ in TOPICS for d in CORPUS["text"]])
    matrix = scores.reshape(len(TOPICS), len(TOPICS))  # row: query, column: document
    assert (matrix.argmax(axis=1) == np.arange(len(TOPICS))).mean() >= 5 / 6
    # and the leakage exclusion: the extractor refuses to score the queries the model learned from
    frame = pd.DataFrame({"qid": ["q_cats", "other"], "query": ["what do cats eat"] * 2, "docno": ["cats"] * 2,
                          "title": "", "text": [CORPUS["text"][0]] * 2})
    out = ext.compute(frame)["ce_score"]
    assert np.isnan(out[0]) and np.isfinite(out[1])


class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated kill")


def test_interrupted_training_resumes_from_the_last_checkpoint(tmp_path):
    params = CETrainingParams(epochs=1, batch_size=1, max_length=32, checkpoint_steps=2, negatives=3, negatives_from=6)
    with pytest.raises(KeyboardInterrupt):
        finetune(groups(), params, tmp_path / "ce", max_steps=5, callbacks=[Kill()], progress=False)
    assert (tmp_path / "ce" / "checkpoints" / "checkpoint-2").exists() and not (tmp_path / "ce" / "model").exists()
    manifest = finetune(groups(), params, tmp_path / "ce", max_steps=5, progress=False)
    assert manifest["resumed_from"].endswith("checkpoint-2") and manifest["steps"] == 5
    assert json.loads((tmp_path / "ce" / "manifest.json").read_text())["steps"] == 5
    assert trained_qids(tmp_path / "ce" / "model") == set(QUERIES["qid"])


def test_synthetic_filtering_on_a_hand_made_example():
    from ranker.training.synthetic import build_prompt, clean, filter_by_retrieval

    generated = pd.DataFrame({"qid": ["syn:a", "syn:b", "syn:c"], "query": ["x", "y", "z"], "docno": ["a", "b", "c"]})
    bm25 = pd.DataFrame({"qid": ["syn:a", "syn:a", "syn:b"], "docno": ["a", "q", "b"], "rank": [1, 2, 30]})
    dense = pd.DataFrame({"qid": ["syn:c", "syn:c"], "docno": ["zz", "c"], "rank": [1, 5]})
    kept = filter_by_retrieval(generated, [bm25, dense], k=10)
    # a: BM25 rank 1 -> kept; b: only at rank 30 -> dropped; c: dense rank 5 -> kept
    assert kept["kept"].tolist() == [True, False, True]
    prompt = build_prompt([("Doc one.", "first claim here")], "Target doc.", label="Claim")
    assert prompt == "Document: Doc one.\nClaim: first claim here\n\nDocument: Target doc.\nClaim:"
    assert clean(" Aspirin lowers fever.\nDocument: junk") == "Aspirin lowers fever."
    assert clean(" ok\n") == ""  # too short to be a query


def test_synthetic_queries_are_generated_once_and_cached(tmp_path):
    from features.store import FeatureStore
    from ranker.training.synthetic import SyntheticParams, synthetic_queries

    params = SyntheticParams(n_docs=2, max_new_tokens=12, doc_tokens=32, example_doc_tokens=16, batch_size=2)
    examples = [(CORPUS["text"][0], QUERIES["query"][0])]
    with FeatureStore(tmp_path / "s.duckdb") as store:
        first = synthetic_queries(store, CORPUS, examples, params, progress=False)
        assert len(store.synthetic(params.version())) == 2
        assert first["qid"].str.startswith("syn:").all() and set(first["docno"]) <= set(CORPUS["docno"])
        import ranker.training.synthetic as syn

        original = syn.QueryGenerator.generate
        syn.QueryGenerator.generate = lambda *a, **k: pytest.fail("cached queries were generated again")
        try:
            again = synthetic_queries(store, CORPUS, examples, params, progress=False)
        finally:
            syn.QueryGenerator.generate = original
        pd.testing.assert_frame_equal(first, again)


def test_title_pseudo_queries_show_bodies_only_and_never_count_as_real_queries(tmp_path):
    from ranker.training.synthetic import title_queries

    corpus = pd.DataFrame({"docno": ["a", "b", "c", "d"],
                           "title": ["Aspirin lowers fever in adults", "Short title", "Statins and muscle pain", None],
                           "text": ["Body A.", "Body B.", "", "Body D."]})
    queries, bodies = title_queries(corpus, n_docs=10, seed=0)
    # b: a two-word title; c: no body; d: no title -> only a is usable
    assert queries.to_dict("list") == {"qid": ["title:a"], "query": ["Aspirin lowers fever in adults"], "docno": ["a"]}
    assert (bodies["title"] == "").all() and bodies["text"].tolist() == corpus["text"].tolist()
    cands = pd.DataFrame({"qid": "title:a", "docno": ["a", "b", "d"], "rank": [1, 2, 3]})
    qrels = pd.DataFrame({"qid": ["title:a"], "docno": ["a"], "label": [1]})
    (group,) = training_groups(queries, qrels, cands, bodies, negatives=2, negatives_from=3, seed=0)
    assert group["docs"][0] == "Body A." and sorted(group["docs"][1:]) == ["Body B.", "Body D."]  # no title shown
    params = CETrainingParams(epochs=1, batch_size=2, max_length=32, checkpoint_steps=1000, negatives=2, negatives_from=3)
    manifest = finetune(groups() + [group], params, tmp_path / "ce", max_steps=1, progress=False)
    assert manifest["data"]["title_groups"] == 1 and manifest["data"]["train_qids"] == sorted(QUERIES["qid"])
