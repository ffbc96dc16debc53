"""Datasets: BEIR folders, LETOR/SVMlight files, TREC run files, and the data search path.

Datasets are found by *name* through a search path, first match wins:

1. each folder in ``$FUSION_LTR_DATA`` (``os.pathsep``-separated),
2. ``../shared/data`` beside the current directory and beside the project checkout,
3. the user cache ``$XDG_CACHE_HOME/fusion-ltr/data`` (default ``~/.cache/fusion-ltr/data``),
   which is where :func:`download` puts what it fetches.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import urllib.error
import urllib.request
import zlib
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import FusionLTRError, MissingInputError, UnknownKeyError, UsageError
from .frames import DOCNO, LABEL, QID, QUERY, RANK, RETRIEVER, SCORE, TEXT, TIMESTAMP, TITLE, validate

ENV_VAR = "FUSION_LTR_DATA"
log = logging.getLogger("fusion_ltr.data")

#: Public archives for users who are online (BEIR's own mirror).
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
DOWNLOADABLE = ("scifact", "nfcorpus", "fiqa", "arguana", "scidocs", "trec-covid")


class DataFormatError(UsageError):
    """A data file does not have the expected format; the message names file and line."""


class DatasetNotFoundError(MissingInputError):
    """No folder of that name on the search path."""


class DownloadError(FusionLTRError, ConnectionError):
    """A dataset could not be downloaded (offline, or the server refused)."""


# --------------------------------------------------------------------------- search path


def cache_dir() -> Path:
    """The user cache of fusion-ltr (``$XDG_CACHE_HOME/fusion-ltr``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fusion-ltr"


def search_path() -> list[Path]:
    """The folders searched for datasets, in order."""
    paths = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    project_root = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), project_root):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate not in paths:
            paths.append(candidate)
    paths.append(cache_dir() / "data")
    return paths


def find_dataset(name: str) -> Path:
    """Return the folder of dataset ``name`` (or ``name`` itself if it is an existing folder)."""
    direct = Path(name).expanduser()
    if direct.is_dir():
        return direct
    for base in search_path():
        if (base / name).is_dir():
            return base / name
    searched = "\n  ".join(str(p) for p in search_path())
    hint = f"\nrun `fusion-ltr data download {name}` if you are online" if name in DOWNLOADABLE else ""
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; searched (set ${ENV_VAR} to add folders):\n  {searched}{hint}"
    )


def download(name: str, dest: Path | None = None, *, timeout: float = 30.0) -> Path:
    """Download a public BEIR dataset into the user cache and return its folder."""
    if name not in DOWNLOADABLE:
        raise UsageError(f"no download known for {name!r}; known: {', '.join(DOWNLOADABLE)}")
    dest = Path(dest) if dest else cache_dir() / "data"
    url = BEIR_URL.format(name=name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"could not download {name!r} from {url}: {exc}. You appear to be offline; put the "
            f"BEIR folder on the search path instead (${ENV_VAR} or ../shared/data)"
        ) from exc
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        zf.extractall(dest)
    return dest / name


# --------------------------------------------------------------------------- BEIR


@dataclass
class Dataset:
    """A retrieval dataset: corpus, queries and graded judgments per split."""

    name: str
    corpus: pd.DataFrame  # docno, title, text, timestamp
    queries: pd.DataFrame  # qid, query
    qrels: dict[str, pd.DataFrame] = field(default_factory=dict)  # split -> qid, docno, label

    def split(self, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Queries judged in ``split`` and that split's qrels."""
        if split not in self.qrels:
            raise UnknownKeyError(f"{self.name}: no qrels for split {split!r}; found {sorted(self.qrels)}")
        qrels = self.qrels[split]
        queries = self.queries[self.queries[QID].isin(set(qrels[QID]))].reset_index(drop=True)
        return queries, qrels


def _lines(path: str | Path):
    """``(line number, text)`` of a UTF-8 text file (gzip when it ends in .gz); a byte that is not
    UTF-8 is a :class:`DataFormatError` naming the file, the line and the byte."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataFormatError(f"{path}:{lineno}: expected UTF-8 text, found byte 0x{raw[exc.start]:02x} at "
                                          f"column {exc.start + 1}: {raw[max(0, exc.start - 30):exc.start + 10]!r}") from None
                yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a truncated or damaged .gz
        raise DataFormatError(f"{path}: the compressed file is damaged or truncated after line {lineno} ({exc}); "
                              "download or compress it again") from None


def _find_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataFormatError(f"{folder}: expected {stem} or {stem}.gz, found {sorted(p.name for p in folder.iterdir())}")


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, found {line[:80]!r} ({exc.msg})") from None
        if not isinstance(obj, dict) or any(k not in obj for k in required):
            raise DataFormatError(
                f"{path}:{lineno}: expected a JSON object with keys {list(required)}, found {line[:80]!r}"
            )
        rows.append(obj)
    if not rows:
        raise DataFormatError(f"{path}: no records (expected one JSON object with keys {list(required)} per line)")
    return rows


def _parse_date(value, path: Path, docno: str):
    if value in (None, ""):
        return pd.NaT
    ts = pd.to_datetime(value, utc=True, errors="coerce")
    if pd.isna(ts):
        raise DataFormatError(f"{path}: document {docno!r} has metadata.date {value!r}; expected an ISO date")
    return ts


def load_corpus(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    rows = _read_jsonl(path, ("_id",))
    for key in ("title", "text"):
        bad = next((r for r in rows if r.get(key) is not None and not isinstance(r.get(key), str)), None)
        if bad is not None:
            raise DataFormatError(f"{path}: document {bad['_id']!r} has a {key} of type {type(bad[key]).__name__}; "
                                  "expected a string")
    return pd.DataFrame(
        {
            DOCNO: [str(r["_id"]) for r in rows],
            TITLE: [r.get("title") or "" for r in rows],
            TEXT: [r.get("text") or "" for r in rows],
            TIMESTAMP: pd.to_datetime(
                [_parse_date((r.get("metadata") or {}).get("date"), path, r["_id"]) for r in rows], utc=True
            ),
        }
    )


def load_queries(path: str | Path) -> pd.DataFrame:
    """Queries; one id with two texts is an error naming both records (the same text twice is kept once)."""
    path = Path(path)
    rows = _read_jsonl(path, ("_id", "text"))
    seen: dict[str, tuple[int, str]] = {}
    for n, r in enumerate(rows, 1):
        qid, text = str(r["_id"]), str(r["text"])
        if qid in seen and seen[qid][1] != text:
            raise DataFormatError(f"{path}: query id {qid!r} has two texts: record {seen[qid][0]} {seen[qid][1][:60]!r} "
                                  f"and record {n} {text[:60]!r}; expected one text per id")
        seen.setdefault(qid, (n, text))
    return pd.DataFrame({QID: list(seen), QUERY: [text for _, text in seen.values()]})


def load_qrels(path: str | Path) -> pd.DataFrame:
    """Read BEIR qrels (``query-id corpus-id score`` TSV with header) or TREC qrels (4 columns)."""
    path = Path(path)
    qids, docnos, labels = [], [], []
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts or (lineno == 1 and parts[0] == "query-id"):
            continue
        if len(parts) == 4:  # TREC: qid iter docno label
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataFormatError(
                f"{path}:{lineno}: expected 'query-id corpus-id score' (3 fields) or TREC qrels (4), "
                f"found {len(parts)} field(s): {line.strip()[:80]!r}"
            )
        try:
            label = float(parts[2])
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: expected a numeric score, found {parts[2]!r}") from None
        if not np.isfinite(label) or label != int(label) or label < 0:
            raise DataFormatError(f"{path}:{lineno}: expected an integer relevance grade >= 0, found {parts[2]!r}")
        qids.append(parts[0])
        docnos.append(parts[1])
        labels.append(int(label))
    if not qids:
        raise DataFormatError(f"{path}: no judgements (expected one 'query-id corpus-id score' line per judgement "
                              "after the header)")
    return pd.DataFrame({QID: qids, DOCNO: docnos, LABEL: np.asarray(labels, dtype=np.int64)})


def load_beir(name_or_path: str | Path) -> Dataset:
    """Load a BEIR-format folder (by dataset name on the search path, or by path)."""
    folder = find_dataset(str(name_or_path))
    corpus = load_corpus(_find_file(folder, "corpus.jsonl"))
    queries = load_queries(_find_file(folder, "queries.jsonl"))
    qrels = {}
    qrels_dir = folder / "qrels"
    if qrels_dir.is_dir():
        for f in sorted(qrels_dir.iterdir()):
            if f.name.endswith((".tsv", ".tsv.gz", ".txt")):
                qrels[f.name.split(".")[0]] = load_qrels(f)
    known_docs, known_queries = set(corpus[DOCNO]), set(queries[QID])
    for split, frame in qrels.items():
        missing_docs = ~frame[DOCNO].isin(known_docs)
        missing_q = ~frame[QID].isin(known_queries)
        if missing_docs.any() or missing_q.any():
            log.warning(
                f"{folder.name}/{split}: {int(missing_docs.sum())} qrels row(s) name a docno missing from the "
                f"corpus and {int(missing_q.sum())} a qid missing from the queries; they are kept (they count "
                "as relevant documents no retriever can find)")
    return Dataset(name=folder.name, corpus=corpus, queries=queries, qrels=qrels)


def hash_split(qids, fraction: float, seed: int, salt: str = "") -> tuple[list[str], list[str]]:
    """Split query ids into (rest, held-out ``fraction``) by a seeded hash of each id.

    Deterministic, and stable: a query's side depends only on its id, the seed and the salt, so adding
    queries never moves old ones. Different salts give independent splits.
    """
    rest, held = [], []
    for q in sorted({str(q) for q in qids}):
        (held if _unit_hash(q, seed, salt) < fraction else rest).append(q)
    return rest, held


def hash_sample(qids, n: int, seed: int, salt: str = "sample:") -> list[str]:
    """The ``n`` query ids with the smallest seeded hash (all of them if there are fewer), sorted.

    Deterministic, and a query in the sample stays in it when ``n`` grows."""
    unique = sorted({str(q) for q in qids})
    return sorted(sorted(unique, key=lambda q: _unit_hash(q, seed, salt))[:n])


def _unit_hash(qid: str, seed: int, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}{seed}:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


# --------------------------------------------------------------------------- TREC runs


def write_trec_run(run: pd.DataFrame, path: str | Path, tag: str | None = None) -> Path:
    """Write a run frame as ``qid Q0 docno rank score tag`` lines, sorted by query then rank."""
    validate(run, (QID, DOCNO, RANK, SCORE), what="run")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = run.sort_values([QID, RANK], kind="stable")
    tags = [tag] * len(run) if tag else (run[RETRIEVER] if RETRIEVER in run else ["fusion-ltr"] * len(run))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for q, d, r, s, t in zip(run[QID], run[DOCNO], run[RANK], run[SCORE], tags):
            fh.write(f"{q} Q0 {d} {int(r)} {float(s):.6f} {t}\n")
    tmp.replace(path)
    return path


def read_trec_run(path: str | Path) -> pd.DataFrame:
    """Read a TREC run file into a run frame (qid, docno, rank, score, retriever)."""
    path = Path(path)
    rows = []
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataFormatError(
                f"{path}:{lineno}: expected 'qid Q0 docno rank score tag' (6 fields), "
                f"found {len(parts)}: {line.strip()[:80]!r}"
            )
        try:
            rows.append((parts[0], parts[2], int(parts[3]), float(parts[4]), parts[5]))
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: expected integer rank and numeric score, found {line.strip()[:80]!r}") from None
    return pd.DataFrame(rows, columns=[QID, DOCNO, RANK, SCORE, RETRIEVER])


# --------------------------------------------------------------------------- LETOR / SVMlight


@dataclass
class LetorData:
    """Rows of a LETOR/SVMlight file: feature matrix, labels, query ids, document ids."""

    X: np.ndarray
    y: np.ndarray
    qids: np.ndarray
    docids: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        return [f"f{i + 1}" for i in range(self.X.shape[1])]

    @staticmethod
    def concat(parts: list["LetorData"]) -> "LetorData":
        width = max(p.X.shape[1] for p in parts)
        Xs = [np.pad(p.X, ((0, 0), (0, width - p.X.shape[1])), constant_values=np.nan) for p in parts]
        return LetorData(
            np.vstack(Xs),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.qids for p in parts]),
            np.concatenate([p.docids for p in parts]),
        )


def load_svmlight(path: str | Path, n_features: int | None = None) -> LetorData:
    """Parse ``label qid:Q idx:value ... [# comment]`` lines (LETOR 4.0 / SVMlight ranking format).

    Feature indices are 1-based; features absent from a line are NaN (LETOR lists all of them).
    The document id is read from a ``docid = X`` comment when present, else the line number.
    """
    path = Path(path)
    labels, qids, docids, rows = [], [], [], []
    width = 0
    for lineno, line in _lines(path):
        body, _, comment = line.partition("#")
        parts = body.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].startswith("qid:"):
            raise DataFormatError(
                f"{path}:{lineno}: expected 'label qid:N idx:value ...', found {line.strip()[:80]!r}"
            )
        try:
            label = float(parts[0])
            feats = {}
            for tok in parts[2:]:
                idx, val = tok.split(":", 1)
                feats[int(idx)] = float(val)
        except ValueError:
            raise DataFormatError(
                f"{path}:{lineno}: expected numeric 'idx:value' pairs, found {line.strip()[:80]!r}"
            ) from None
        if feats and min(feats) < 1:
            raise DataFormatError(f"{path}:{lineno}: feature indices are 1-based, found {min(feats)}")
        width = max(width, max(feats, default=0))
        docid = str(lineno)
        if "docid" in comment:
            docid = comment.split("docid", 1)[1].lstrip(" =").split()[0]
        labels.append(label)
        qids.append(parts[1][4:])
        docids.append(docid)
        rows.append(feats)
    width = n_features or width
    X = np.full((len(rows), width), np.nan, dtype=np.float64)
    for i, feats in enumerate(rows):
        for idx, val in feats.items():
            if idx <= width:
                X[i, idx - 1] = val
    return LetorData(X, np.asarray(labels), np.asarray(qids, dtype=object), np.asarray(docids, dtype=object))


#: Fold definitions of LETOR 4.0 (from its readme): fold -> (train parts, validation part, test part).
LETOR_FOLDS = {
    1: ((1, 2, 3), 4, 5),
    2: ((2, 3, 4), 5, 1),
    3: ((3, 4, 5), 1, 2),
    4: ((4, 5, 1), 2, 3),
    5: ((5, 1, 2), 3, 4),
}


def load_letor_fold(name_or_path: str | Path, fold: int) -> tuple[LetorData, LetorData, LetorData]:
    """Train, validation and test data of a LETOR 4.0 fold built from the ``S1..S5`` partitions."""
    if fold not in LETOR_FOLDS:
        raise UsageError(f"LETOR fold must be one of {sorted(LETOR_FOLDS)}, found {fold!r}")
    folder = find_dataset(str(name_or_path))
    train_parts, valid_part, test_part = LETOR_FOLDS[fold]
    parts = {i: load_svmlight(_find_file(folder, f"S{i}.txt")) for i in range(1, 6)}
    return LetorData.concat([parts[i] for i in train_parts]), parts[valid_part], parts[test_part]
