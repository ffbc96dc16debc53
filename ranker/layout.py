"""Where everything of a run lives: the one object that owns the paths of a run folder.

Run folder layout (all plain files)::

    <run.dir>/
      config.toml                        copy of the config used
      steps.json                         steps `run` completed, with a digest of each one's inputs
      index/bm25/, index/corpus.parquet  the bm25s index and the corpus (for `Scorer.search`)
      retrieval/<system>.<split>.trec    first-stage TREC runs (bm25, dense, hybrid)
      retrieval/manifest.json            parameters, corpus size, wall times
      features.duckdb                    the feature store (unless features.store says otherwise)
      features/manifest.json             the feature set: names, versions, extractor configs
      features/summary.md                rows, computed vs cached, NaN counts, cost per feature
      features/extractors/               corpus statistics the extractors were fitted with (e.g. bm25.json)
      crossencoder/                      `finetune-ce`: model/, checkpoints/, manifest.json, split.json
                                         (cross-fitted: fold-a/, fold-b/ each so, model/cross_fit.json)
      biencoder/                         `finetune-be`: model/, checkpoints/, manifest.json
      model/, model-<variant>/           LambdaMART: booster, manifest.json, extractors/ (for the Scorer)
      eval/<split>/metrics.json, table.md   first-stage evaluation
      eval/<split>/ranker.json, ranker.md   the ranker against baselines
      eval/<split>/runs/<name>.trec      every ranking the ranker evaluation scored, as a TREC run
      report/importance.{md,json}, *.png importance report
"""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: str | Path, *, keep: bool = False):
    """Write a folder in a sibling ``<name>.tmp`` and put it in place only when the block succeeds, so
    a failed or interrupted step leaves the previous folder (e.g. a trained model) as it was. With
    ``keep``, the block starts from a copy of the folder's current content (files it does not rewrite
    stay)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if keep and path.is_dir():
        shutil.copytree(path, tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


LOCK = ".lock"


@contextmanager
def locked(folder: str | Path, command: str):
    """Hold ``<folder>/.lock`` (an OS file lock, released when the process ends, even by kill -9) while a
    command writes the run folder; a second command on the same folder is refused, naming the first."""
    import datetime as dt
    import os

    from retrieval.errors import UsageError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (said once per command)
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UsageError(f"{folder}: another fusion-ltr command is writing this run folder ({holder}); wait "
                                 f"for it to finish, or stop it (the lock {path} is released when it exits)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"`fusion-ltr {command}`, pid {os.getpid()}, since {dt.datetime.now().isoformat(timespec='seconds')}")
        handle.flush()
        yield path
    finally:
        handle.close()


def variant_of(name: str) -> str | None:
    """The variant a model name names: ``lambdamart[content]`` -> ``content``; None for any other name."""
    if name.startswith("lambdamart[") and name.endswith("]"):
        return name[len("lambdamart["):-1]
    return None


def slug(name: str) -> str:
    """A file-name form of a system name: ``lambdamart[content]`` -> ``lambdamart-content``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.replace(" ", "_")).strip("-")


class RunLayout:
    """The paths of one run folder (``run.dir``); creating the layout creates nothing on disk."""

    def __init__(self, root: str | Path, *, store: str | Path = "", crossencoder: str | Path = "",
                 source: str | Path = "", biencoder: str | Path = ""):
        self.root = Path(root)
        #: Where retrieval, the feature store and the feature set live: this folder, or the run folder
        #: this one reuses them from (``features.from_run``); models, evaluations and reports stay here.
        self.source = Path(source) if source else self.root
        self._store = Path(store) if store else self.source / "features.duckdb"
        self._crossencoder = Path(crossencoder) if crossencoder else self.source / "crossencoder"
        self._biencoder = Path(biencoder) if biencoder else self.source / "biencoder"

    @classmethod
    def of(cls, cfg) -> "RunLayout":
        """The layout a config describes (``run.dir``, ``features.store``, ``finetune.output``,
        ``features.from_run``)."""
        return cls(cfg.run.dir, store=cfg.features.store, crossencoder=cfg.finetune.output,
                   source=cfg.features.from_run, biencoder=cfg.finetune_biencoder.output)

    # ------------------------------------------------------------------ run level
    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def steps(self) -> Path:
        return self.root / "steps.json"

    # ------------------------------------------------------------------ retrieval
    @property
    def index(self) -> Path:
        return self.source / "index"

    @property
    def corpus(self) -> Path:
        return self.index / "corpus.parquet"

    @property
    def retrieval(self) -> Path:
        return self.source / "retrieval"

    @property
    def retrieval_manifest(self) -> Path:
        return self.retrieval / "manifest.json"

    def retrieval_trec(self, system: str, split: str) -> Path:
        return self.retrieval / f"{system}.{split}.trec"

    # ------------------------------------------------------------------ features
    @property
    def store(self) -> Path:
        return self._store

    @property
    def features(self) -> Path:
        return self.source / "features"

    @property
    def features_manifest(self) -> Path:
        return self.features / "manifest.json"

    @property
    def features_summary(self) -> Path:
        return self.features / "summary.md"

    @property
    def extractor_state(self) -> Path:
        return self.features / "extractors"

    # ------------------------------------------------------------------ cross-encoder
    @property
    def crossencoder(self) -> Path:
        return self._crossencoder

    @property
    def crossencoder_model(self) -> Path:
        return self._crossencoder / "model"

    @property
    def biencoder(self) -> Path:
        return self._biencoder

    @property
    def biencoder_model(self) -> Path:
        return self._biencoder / "model"

    # ------------------------------------------------------------------ ranker
    def model(self, name: str = "lambdamart") -> Path:
        """``model/`` for the main model, ``model-<variant>/`` for ``lambdamart[<variant>]``."""
        if name == "lambdamart":
            return self.root / "model"
        variant = variant_of(name)
        if variant is None:
            raise ValueError(f"model name must be 'lambdamart' or 'lambdamart[<variant>]', found {name!r}")
        return self.root / f"model-{variant}"

    def eval(self, split: str) -> Path:
        return self.root / "eval" / split

    def eval_trec(self, split: str, name: str) -> Path:
        return self.eval(split) / "runs" / f"{slug(name)}.trec"

    @property
    def report(self) -> Path:
        return self.root / "report"
