"""Calibration to P(relevant): by hand on tiny score lists."""

import numpy as np
import pytest

from ranker.calibration import (Calibrator, at_threshold, choose, expected_calibration_error, reliability,
                                threshold_for_precision)


def test_isotonic_is_a_monotone_step_and_platt_a_logistic(tmp_path):
    iso = Calibrator.fit("isotonic", [0, 1, 2, 3], [0, 0, 1, 1])
    np.testing.assert_allclose(iso.predict([-5, 0, 1, 2, 3, 9]), [0, 0, 0, 1, 1, 1])
    # symmetric about 1.5 (relevant: 0 of 2 at 0, 1 of 2 at 1 and at 2, 2 of 2 at 3), so P(1.5) = 0.5
    platt = Calibrator.fit("platt", [0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 0, 1, 0, 1, 1, 1])
    assert platt.params["a"] > 0 and platt.predict([1.5])[0] == pytest.approx(0.5, abs=1e-4)
    platt.save(tmp_path)
    again = Calibrator.load(tmp_path)
    np.testing.assert_array_equal(again.predict([0.3, 2.7]), platt.predict([0.3, 2.7]))
    assert Calibrator.load(tmp_path / "none") is None
    with pytest.raises(ValueError, match="kind must be one of"):
        Calibrator.fit("beta", [0, 1], [0, 1])


def test_choose_picks_by_held_out_log_loss_on_queries():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    labels = (rng.random(400) < 1 / (1 + np.exp(-2 * scores))).astype(int)  # truly logistic: Platt's shape
    qids = np.repeat([f"q{i}" for i in range(40)], 10)
    cal = choose(scores, labels, qids)
    assert set(cal.info["heldout_log_loss"]) == {"platt", "isotonic"}
    assert cal.kind == min(cal.info["heldout_log_loss"], key=cal.info["heldout_log_loss"].get)
    assert cal.info["queries"] == 40 and cal.info["rows"] == 400


def test_ece_reliability_and_the_threshold_for_a_precision():
    p, y = [0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]
    # bins: 0.2 holds 2 docs, half relevant (|0.2 - 0.5| = 0.3); 0.8 holds 2, all relevant (0.2)
    assert expected_calibration_error(p, y) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    rows = reliability(p, y)
    assert [r["n"] for r in rows if r["n"]] == [2, 2]
    p, y = [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1]  # precision when keeping the top 1..4: 1, 1, 2/3, 3/4
    assert threshold_for_precision(p, y, 0.75) == 0.6
    assert threshold_for_precision(p, y, 0.9) == 0.8
    assert threshold_for_precision([0.5, 0.5], [0, 0], 0.5) is None
    got = at_threshold(p, y, ["a", "a", "b", "b"], 0.8)
    assert got == {"threshold": 0.8, "precision": 1.0, "recall": pytest.approx(2 / 3), "kept_per_query": 1.0}
