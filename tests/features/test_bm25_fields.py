"""bm25_fields: BM25 of the title and of the body apart, each with its own field's statistics, by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from features.base import create
from features.bm25 import BM25Extractor
from features.bm25_fields import BM25FieldsExtractor
from retrieval.errors import MissingInputError

CORPUS = pd.DataFrame({"docno": ["d1", "d2"], "title": ["Aspirin fever", "Statin"],
                       "text": ["Children study", "Aspirin dose"]})


def pairs(frame):
    return frame.assign(qid="q", query="aspirin", timestamp=pd.NaT, rank=range(1, len(frame) + 1), score=1.0)


def test_each_field_is_scored_under_its_own_statistics():
    out = create("bm25_fields").fit(CORPUS).compute(pairs(CORPUS))
    # title field: N = 2, df(aspirin) = 1, lengths 2 and 1 (avgdl 1.5); d1's title has it once
    idf = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))  # lucene
    title_d1 = idf / (1 + 0.9 * (1 - 0.4 + 0.4 * 2 / 1.5))
    # body field: lengths 2 and 2 (avgdl 2); d2's body has it once
    body_d2 = idf / (1 + 0.9)
    np.testing.assert_allclose(out["bm25_title"], [title_d1, 0.0], rtol=1e-9)
    np.testing.assert_allclose(out["bm25_body"], [0.0, body_d2], rtol=1e-9)


def test_without_titles_the_body_is_bm25_and_the_title_is_zero():
    untitled = CORPUS.assign(title="")
    out = BM25FieldsExtractor().fit(untitled).compute(pairs(untitled))
    np.testing.assert_allclose(out["bm25_body"], BM25Extractor().fit(untitled).compute(pairs(untitled))["bm25"])
    assert out["bm25_title"].tolist() == [0.0, 0.0]


def test_the_saved_statistics_give_the_same_values_and_version(tmp_path):
    fitted = BM25FieldsExtractor().fit(CORPUS)
    fitted.save_state(tmp_path)
    served = BM25FieldsExtractor().load_state(tmp_path)
    assert served.version == fitted.version
    other = BM25FieldsExtractor().fit(CORPUS.assign(title=["Aspirin", "Aspirin statin"]))
    assert other.version != fitted.version  # the title statistics are part of it
    for name in ("bm25_title", "bm25_body"):
        np.testing.assert_array_equal(served.compute(pairs(CORPUS))[name], fitted.compute(pairs(CORPUS))[name])
    with pytest.raises(MissingInputError, match="per-field BM25 statistics"):
        BM25FieldsExtractor().load_state(tmp_path / "elsewhere")
