"""Freshness: document age at a reference time, and an exponential decay with a half-life.

``reference_time = "now"`` is resolved to today's date (UTC midnight) when the extractor is built, and
the resolved date is what its parameters, version and provenance hold: a model trained today stores
that date with its extractor configs, so serving it tomorrow computes the same ages it learned from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.errors import UsageError
from retrieval.frames import DOCNO, TIMESTAMP
from retrieval.params import ConfigError

from .base import BaseExtractor


@dataclass(frozen=True)
class FreshnessParams:
    reference_time: str = "now"  # an ISO date/time, or "now" (resolved to today, UTC, when built)
    half_life_days: float = 365.0  # a document this many days old scores 0.5, twice as old 0.25
    newer: str = "clamp"  # a document dated after reference_time: "clamp" (age 0) or "refuse" (an error)
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 4096  # pairs per batch of the feature build (stored as each batch completes)


def today() -> pd.Timestamp:
    """The clock "now" resolves against: today at midnight, UTC."""
    return pd.Timestamp.now(tz="UTC").normalize()


class FreshnessExtractor(BaseExtractor):
    """``age_days`` = (reference - timestamp) in days; ``freshness`` = 0.5 ** (age / half_life);
    ``has_timestamp`` = 1/0. A document without a timestamp gets NaN age and freshness; one dated after
    the reference gets age 0 (``newer = "clamp"``) or an error naming it (``"refuse"``)."""

    name = "freshness"
    CODE_VERSION = "2"  # 2: a document newer than the reference is clamped to age 0 (or refused)
    Params = FreshnessParams
    FEATURES = {
        "age_days": "document age in days at the reference time",
        "freshness": "0.5 ** (age_days / half_life_days)",
        "has_timestamp": "1 if the document has a timestamp, else 0",
    }

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        p = self.params
        if p.newer not in ("clamp", "refuse"):
            raise ConfigError(f"features.freshness.newer: expected 'clamp' or 'refuse', found {p.newer!r}")
        if p.half_life_days <= 0:
            raise ConfigError(f"features.freshness.half_life_days must be > 0, found {p.half_life_days}")
        self._now = p.reference_time == "now"
        if self._now:
            self.params = p = dataclasses.replace(p, reference_time=today().isoformat())
        ref = pd.to_datetime(p.reference_time, utc=True, errors="coerce")
        if pd.isna(ref):
            raise ConfigError(f"features.freshness.reference_time: expected an ISO date or 'now', "
                              f"found {p.reference_time!r}")
        self.reference = ref

    def param_changes(self, built: dict) -> dict[str, tuple]:
        """A configured "now" stands for the day the features were built, whichever it was."""
        changes = super().param_changes(built)
        if self._now:
            changes.pop("reference_time", None)
        return changes

    def state(self) -> dict:
        return {"reference": self.reference.isoformat()}

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        ts = pd.to_datetime(pairs[TIMESTAMP], utc=True)
        age = ((self.reference - ts).dt.total_seconds() / 86400.0).to_numpy(dtype=np.float64, na_value=np.nan)
        newer = age < 0
        if newer.any():
            if self.params.newer == "refuse":
                i = int(np.flatnonzero(newer)[0])
                raise UsageError(f"doc {pairs[DOCNO].iloc[i]!r}: dated {ts.iloc[i].isoformat()}, after the reference "
                                 f"time {self.reference.isoformat()} ({int(newer.sum())} such document(s)); set "
                                 "features.freshness.newer = 'clamp' to give them age 0")
            age = np.where(newer, 0.0, age)
        return {
            "age_days": age,
            "freshness": np.power(0.5, age / self.params.half_life_days),
            "has_timestamp": (~np.isnan(age)).astype(np.float64),
        }
