"""Team-draft interleaving by hand, its credit and the sign test."""

import random

import pytest

from ranker.interleaving import Outcome, credit, team_draft
from retrieval.errors import UsageError


def test_identical_rankings_interleave_to_themselves_with_balanced_teams():
    shown, teams = team_draft([1, 2, 3, 4], [1, 2, 3, 4], random.Random(0))
    assert shown == [1, 2, 3, 4] and sorted(teams) == ["a", "a", "b", "b"]


@pytest.mark.parametrize("seed", range(5))
def test_each_team_picks_in_its_rankers_order_and_the_teams_stay_balanced(seed):
    a, b = ["a1", "x", "a2", "a3"], ["b1", "x", "b2", "b3"]
    shown, teams = team_draft(a, b, random.Random(seed), k=6)
    assert len(shown) == 6 == len(set(shown))
    for team, ranking in (("a", a), ("b", b)):
        picks = [d for d, t in zip(shown, teams) if t == team]
        assert picks == [d for d in ranking if d in picks]  # in the ranker's own order
        assert all(d in ranking for d in picks)
    for n in range(1, 7):  # after every round both teams have contributed equally (one ahead mid-round)
        assert abs(teams[:n].count("a") - teams[:n].count("b")) <= 1
    firsts = {team_draft(a, b, random.Random(s))[1][0] for s in range(20)}
    assert firsts == {"a", "b"}  # a coin decides who picks first


def test_clicks_credit_the_team_of_the_clicked_document():
    assert credit(["a", "b", "a"], [False, True, True]) == "tie"
    assert credit(["a", "b", "a"], [True, True, True]) == "a"
    assert credit(["a", "b", "b"], [False, False, True]) == "b"
    assert credit(["a", "b"], [False, False]) == "tie"
    with pytest.raises(UsageError, match="2 teams for 3"):
        credit(["a", "b"], [True, False, True])


def test_the_sign_test_over_wins_and_losses():
    out = Outcome()
    for w in ["a"] * 15 + ["b"] * 5 + ["tie"] * 7:
        out.add(w)
    assert (out.wins, out.losses, out.ties) == (15, 5, 7)
    assert out.p_value == pytest.approx(0.04139, abs=1e-4)  # 2 * P(X >= 15), X ~ Binomial(20, 0.5)
    assert Outcome().p_value == 1.0
