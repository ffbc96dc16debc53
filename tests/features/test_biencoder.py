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
