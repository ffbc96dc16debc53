import numpy as np
import pandas as pd
import pytest

from features.biencoder import BiEncoderExtractor
from retrieval.dense import DenseRetriever

CORPUS = pd.DataFrame({"docno": ["cat", "bread", "empty"], "title": ["Cats", "", ""],
                       "text": ["A cat is a feline.", "Bread needs flour.", ""]})


def test_cosine_reuses_the_retrieval_cache_and_matches_direct_encoding(tmp_path):
    DenseRetriever(cache=tmp_path).index(CORPUS)  # what `fusion-ltr retrieve` leaves behind
    ext = BiEncoderExtractor(cache=str(tmp_path)).fit(CORPUS)
    assert ext.dense.stats_ == {"encoded": 0, "cached": 3}
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["cat", "bread", "empty", "new"],
                          "title": ["Cats", "", "", ""], "text": ["A cat is a feline.", "Changed text.", "", "Dogs."]})
    got = ext.compute(frame)["cosine"]
    texts = ["Cats A cat is a feline.", "Changed text.", "", "Dogs."]
    q = ext.dense.encode(["kitten"])[0]
    expected = ext.dense.encode(texts) @ q
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got[0] == pytest.approx(got.max())


def test_documents_outside_the_corpus_are_encoded_once_and_the_cache_gives_the_same_values(tmp_path):
    ext = BiEncoderExtractor(cache=str(tmp_path), memory_cache=3).fit(CORPUS)
    calls = []
    encode = ext.dense.encode
    ext.dense.encode = lambda texts, **kw: calls.append(list(texts)) or encode(texts, **kw)  # a spy, not a mock
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["d1", "d2", "d3"], "title": "",
                          "text": ["Dogs bark.", "Kittens purr.", "Dogs bark."]})
    first = ext.compute(frame)["cosine"]
    assert calls == [["Dogs bark.", "Kittens purr."], ["kitten"]]  # each distinct text once, then the query
    again = ext.compute(frame.assign(query="kitten"))["cosine"]
    assert len(calls) == 2 and np.array_equal(first, again)  # served from memory, the very same values
    uncached = BiEncoderExtractor(cache=str(tmp_path), memory_cache=0).fit(CORPUS).compute(frame)["cosine"]
    np.testing.assert_allclose(first, uncached, rtol=1e-6, atol=1e-7)  # batching may move the last bits
    assert ext.version == BiEncoderExtractor(cache=str(tmp_path), memory_cache=0).version  # values never differ
    ext.compute(frame.assign(text=["Owls hoot.", "Bees hum.", "Cows moo."]))
    assert len(ext._fresh) == 3 and len(calls) == 3  # bounded: the least recent ones were dropped


def test_an_apps_own_embedding_is_used_and_a_wrong_model_or_dimension_is_refused(tmp_path):
    from retrieval.errors import UsageError

    ext = BiEncoderExtractor(cache=str(tmp_path)).fit(CORPUS)
    vec = ext.dense.encode(["Dogs bark."])[0]
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["a", "b"], "title": "",
                          "text": ["Dogs bark.", "Kittens purr."],
                          "embedding": pd.Series([3.0 * vec, None], dtype=object),  # not normalised: it is here
                          "embedding_model": pd.Series(["all-MiniLM-L6-v2", None], dtype=object)})
    plain = ext.compute(frame.drop(columns=["embedding", "embedding_model"]))["cosine"]
    encoded = []
    encode = ext.dense.encode
    ext.dense.encode = lambda texts, **kw: encoded.extend(texts) or encode(texts, **kw)  # a spy
    ext._fresh.clear()
    got = ext.compute(frame)["cosine"]
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-6)
    assert encoded == ["Kittens purr."]  # the doc with its own embedding was not encoded
    with pytest.raises(UsageError, match="doc 'a': its embedding comes from 'bge-small-en'"):
        ext.compute(frame.assign(embedding_model=pd.Series(["bge-small-en", None], dtype=object)))
    with pytest.raises(UsageError, match="doc 'a': its embedding has 10 dimensions, .* gives 384"):
        ext.compute(frame.assign(embedding=pd.Series([np.ones(10), None], dtype=object)))


def test_the_unseen_path_encodes_every_document_and_gives_the_stored_values(tmp_path):
    ext = BiEncoderExtractor(cache=str(tmp_path)).fit(CORPUS)
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["cat", "bread"], "title": ["Cats", ""],
                          "text": ["A cat is a feline.", "Bread needs flour."]})
    encoded = []
    encode = ext.dense.encode
    ext.dense.encode = lambda texts, **kw: encoded.extend(texts) or encode(texts, **kw)  # a spy
    stored = ext.compute(frame)["cosine"]
    assert encoded == ["kitten"]  # corpus documents: their embeddings are read, only the query is encoded
    unseen = ext.compute_unseen(frame)["cosine"]
    assert encoded == ["kitten", "Cats A cat is a feline.", "Bread needs flour."]
    np.testing.assert_allclose(unseen, stored, rtol=1e-5, atol=1e-6)


def test_the_disk_cache_serves_another_process_the_very_same_embeddings(tmp_path):
    disk = str(tmp_path / "app-embeddings.sqlite")
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["d1", "d2"], "title": "",
                          "text": ["Dogs bark.", "Kittens purr."]})
    first = BiEncoderExtractor(cache=str(tmp_path), disk_cache=disk, memory_cache=0).fit(CORPUS)
    values = first.compute(frame)["cosine"]
    later = BiEncoderExtractor(cache=str(tmp_path), disk_cache=disk, memory_cache=0).fit(CORPUS)  # a restart
    encoded = []
    encode = later.dense.encode
    later.dense.encode = lambda texts, **kw: encoded.extend(texts) or encode(texts, **kw)  # a spy
    assert np.array_equal(later.compute(frame)["cosine"], values)  # bit for bit: the stored float32 vectors
    assert encoded == ["kitten"]  # only the query was encoded
    assert later.version == BiEncoderExtractor(cache=str(tmp_path)).version  # where they are kept changes no value


def test_query_embeddings_are_bounded_too(tmp_path):
    ext = BiEncoderExtractor(cache=str(tmp_path), memory_cache=2).fit(CORPUS)
    frame = pd.DataFrame({"qid": "q", "query": "kitten", "docno": ["cat"], "title": ["Cats"],
                          "text": ["A cat is a feline."]})
    first = ext.compute(frame)["cosine"]
    for q in ("owl", "bee", "cow"):  # a server sees ever new queries
        ext.compute(frame.assign(query=q))
    assert list(ext._queries) == ["bee", "cow"]  # the two most recent
    np.testing.assert_allclose(ext.compute(frame)["cosine"], first, rtol=1e-6, atol=1e-7)  # encoded again, same value
