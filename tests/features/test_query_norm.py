"""Query-level normalisation, by hand on two small queries."""

import numpy as np
import pytest

from features.matrix import RankingData
from features.query_norm import add, raw_names, split
from retrieval.errors import UsageError


def data():
    # q1: bm25 3, 1, 3, NaN (not computed); q2: 5, 5
    X = np.array([[3.0, 7.0], [1.0, 7.0], [3.0, 7.0], [np.nan, 7.0], [5.0, 2.0], [5.0, 2.0]])
    return RankingData.from_arrays(X, np.zeros(6), ["q1"] * 4 + ["q2"] * 2, list("abcdef"), ["bm25", "len"],
                                   ["v1", "v2"])


def test_rank_z_and_gap_are_per_query_and_leave_nan_alone():
    out = add(data(), ["bm25_qrank", "len", "bm25_qz", "bm25_qgap"])
    assert out.feature_names == ["bm25_qrank", "len", "bm25_qz", "bm25_qgap"]
    assert out.feature_versions == ["v1+q1", "v2", "v1+q1", "v1+q1"]
    rank, length, z, gap = out.X.T
    np.testing.assert_array_equal(rank, [1, 3, 1, np.nan, 1, 1])  # ties share the best rank
    np.testing.assert_array_equal(length, [7, 7, 7, 7, 2, 2])
    # q1 mean 7/3, population std sqrt(((2/3)^2 * 2 + (4/3)^2) / 3) = sqrt(8/9)
    sd = np.sqrt(8 / 9)
    np.testing.assert_allclose(z, [(2 / 3) / sd, (-4 / 3) / sd, (2 / 3) / sd, np.nan, 0, 0])  # q2: all equal
    np.testing.assert_array_equal(gap, [0, 2, 0, np.nan, 0, 0])


def test_values_depend_only_on_the_rows_given_so_a_subset_is_normalised_over_itself():
    d = data()
    sub = RankingData.from_arrays(d.X[[1, 3]], d.y[[1, 3]], d.qids[[1, 3]], d.docnos[[1, 3]], d.feature_names,
                                  d.feature_versions)
    np.testing.assert_array_equal(add(sub, ["bm25_qrank"]).X[:, 0], [1, np.nan])  # 1 is the best of {1, NaN}


def test_names_and_a_missing_source():
    assert split("ce_score_qgap") == ("ce_score", "qgap") and split("bm25") is None and split("fs_rank") is None
    assert raw_names(["bm25_qrank", "len", "bm25_qz"]) == ["bm25", "len"]
    with pytest.raises(UsageError, match=r"lacks \['cosine'\]"):
        add(data(), ["cosine_qrank"])
