"""Online comparison of two rankers by team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008).

Each impression merges the two rankings: in each round a coin decides which ranker picks first, and each
picks its best document not yet shown; every document remembers the team that contributed it. A click
credits the team of the clicked document; per impression, the ranker whose team got more clicks wins (equal
clicks, none included: a tie). Over many impressions, a two-sided sign test on the wins and losses says
whether one ranker is preferred.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from retrieval.errors import UsageError


def team_draft(a: list, b: list, rng: random.Random, k: int | None = None) -> tuple[list, list[str]]:
    """The interleaved list of rankings ``a`` and ``b`` (document ids, best first; the same documents, or
    overlapping ones) and each position's team ("a" or "b"), at most ``k`` long."""
    k = len(set(a) | set(b)) if k is None else k
    shown, teams, seen = [], [], set()
    ia = ib = 0
    count = {"a": 0, "b": 0}
    while len(shown) < k:
        left_a = any(d not in seen for d in a[ia:])
        left_b = any(d not in seen for d in b[ib:])
        if not left_a and not left_b:
            break
        pick_a = left_a and (not left_b or count["a"] < count["b"] or (count["a"] == count["b"] and rng.random() < 0.5))
        ranking, team = (a, "a") if pick_a else (b, "b")
        i = ia if pick_a else ib
        while ranking[i] in seen:
            i += 1
        shown.append(ranking[i])
        teams.append(team)
        seen.add(ranking[i])
        count[team] += 1
        if pick_a:
            ia = i + 1
        else:
            ib = i + 1
    return shown, teams


def credit(teams: list[str], clicked: list[bool]) -> str:
    """The winner of one impression: "a", "b" or "tie" (more clicks on one team's documents)."""
    if len(teams) != len(clicked):
        raise UsageError(f"credit: {len(teams)} teams for {len(clicked)} click flags")
    a = sum(c for t, c in zip(teams, clicked) if t == "a")
    b = sum(c for t, c in zip(teams, clicked) if t == "b")
    return "a" if a > b else "b" if b > a else "tie"


@dataclass
class Outcome:
    """Wins, losses and ties of ranker "a" against "b" over impressions, with the two-sided sign test."""

    wins: int = 0
    losses: int = 0
    ties: int = 0

    def add(self, winner: str) -> None:
        if winner == "a":
            self.wins += 1
        elif winner == "b":
            self.losses += 1
        else:
            self.ties += 1

    @property
    def p_value(self) -> float:
        """Two-sided sign test (ties left out): scipy's exact binomial test of wins among decided impressions."""
        from scipy.stats import binomtest

        n = self.wins + self.losses
        return 1.0 if n == 0 else float(binomtest(self.wins, n, 0.5).pvalue)

    def as_dict(self) -> dict:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "p_value": self.p_value}


def outcomes(store, kinds=("click",)) -> dict[str, dict]:
    """Per pair of interleaved models in ``store``'s interaction log (``{"a": ..., "b": ...}`` as JSON), the
    wins, losses and ties of team "a" and the sign test, over the interleaved impressions."""
    import json

    import pandas as pd

    store.con.register("_kinds", pd.DataFrame({"kind": [str(k) for k in kinds]}))
    rows = store.sql(
        "SELECT i.interleaved, d.impression_id, d.team, EXISTS (SELECT 1 FROM interactions x WHERE "
        "x.impression_id = d.impression_id AND x.docno = d.docno AND x.kind IN (SELECT kind FROM _kinds)) AS clicked "
        "FROM impressions i JOIN impression_docs d USING (impression_id) WHERE i.interleaved IS NOT NULL "
        "ORDER BY d.impression_id, d.position")
    out = {}
    for pair, part in rows.groupby("interleaved", sort=True):
        result = Outcome()
        for _, imp in part.groupby("impression_id", sort=False):
            result.add(credit(imp["team"].tolist(), imp["clicked"].tolist()))
        models = json.loads(pair)
        out[f"{models['a']} vs {models['b']}"] = {"a": models["a"], "b": models["b"], **result.as_dict()}
    return out
