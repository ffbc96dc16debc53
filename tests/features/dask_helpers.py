"""An extractor for the Dask tests: it logs every pair it computed, and kills its worker process the
first time it meets a chosen query (a marker file makes it die once)."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.base import BaseExtractor


@dataclass(frozen=True)
class KillOnceParams:
    log: str = ""  # a file that gets one line "qid docno" per computed pair
    kill_qid: str = ""  # the worker computing this query dies (once)
    marker: str = ""  # exists after the first death
    top_n: int | None = None
    batch_size: int = 4


class KillOnceExtractor(BaseExtractor):
    name = "killonce"
    Params = KillOnceParams
    FEATURES = {"words": "number of words in the document"}

    def compute(self, pairs):
        p = self.params
        if p.kill_qid and p.kill_qid in set(pairs["qid"]) and not Path(p.marker).exists():
            Path(p.marker).write_text("died")
            os._exit(1)
        out = np.array([len(t.split()) for t in pairs["text"]], dtype=float)
        with open(p.log, "a") as fh:
            fh.writelines(f"{q} {d}\n" for q, d in zip(pairs["qid"], pairs["docno"]))
        return {"words": out}
