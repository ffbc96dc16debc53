"""``fusion-ltr init``: a short, commented config for a user's own data, with safe defaults.

The data is a folder in BEIR form (the form of every dataset here): ``corpus.jsonl`` (``_id``, ``text``,
optional ``title`` and ``metadata.date``), ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv``
(``query-id``, ``corpus-id``, ``score``). :func:`write_config` reads it once (every line is checked, as
every command does), then writes a config that

- retrieves with BM25 and the packaged MiniLM bi-encoder, fused (RRF), and reranks the top 100;
- computes the cheap signals on every candidate (first-stage ranks and scores, BM25, coverage, cosine,
  lengths, and freshness when the documents have dates), normalised per query;
- with a training split: fine-tunes a cross-encoder on part of the training queries (the ranker learns from
  the others) and serves a two-stage cascade (the cross-encoder only on the documents stage 1 keeps),
  planned to ``ranker.budget_ms``; without one: a single model, evaluated by cross-validation;
- analyses the text for its language: Chinese (most letters Chinese characters) gets ``language = "zh"``
  (jieba words for BM25 and the lexical features) and BM25's candidates, the packaged bi-encoder being
  English;
- chooses the booster's settings by cross-validation on the training queries (``params = "auto"``) and
  keeps the first stage's order where the model is not better on held-out training queries (the guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrieval.analysis import detect_language
from retrieval.data import find_dataset, load_beir
from retrieval.frames import doc_text
from retrieval.errors import MissingInputError, UsageError

#: Splits tried as the test split, in order, when the data has more than one.
TEST_SPLITS = ("test", "dev", "validation", "valid")


@dataclass(frozen=True)
class DataSummary:
    """What :func:`write_config` needs to know of a dataset folder."""

    folder: Path
    documents: int
    queries: int
    splits: dict[str, int]  # split -> judged queries
    titles: bool
    dates: bool
    language: str = "en"  # detected from up to 2,000 documents (retrieval.analysis.detect_language)
    chinese: float = 0.0  # the share of their letters that are Chinese characters

    @property
    def test_split(self) -> str:
        named = [s for s in TEST_SPLITS if s in self.splits]
        return named[0] if named else sorted(self.splits)[-1]

    @property
    def train_split(self) -> str | None:
        return "train" if "train" in self.splits and len(self.splits) > 1 else None


def summarise(data: str | Path) -> DataSummary:
    """Read the dataset ``data`` (a folder, or a name on the data search path) once, checking every line."""
    folder = find_dataset(str(data))
    ds = load_beir(str(folder))
    if not ds.qrels:
        raise MissingInputError(f"{folder}: no qrels/<split>.tsv (query-id, corpus-id, score): the ranker learns "
                                "from relevance judgements; judge some queries' documents first")
    splits = {s: int(q["qid"].nunique()) for s, q in ((s, ds.split(s)[0]) for s in ds.qrels)}
    corpus = ds.corpus
    return DataSummary(folder.resolve(), len(corpus), len(ds.queries), splits,
                       bool((corpus["title"].fillna("") != "").any()),
                       bool("timestamp" in corpus and corpus["timestamp"].notna().any()),
                       *detect_language(doc_text(corpus.head(2000))))


def config_text(summary: DataSummary, run_dir: str, budget_ms: float) -> str:
    """The config (TOML, with comments) for ``summary``'s data."""
    s = summary
    train, test = s.train_split, s.test_split
    # Chinese: BM25's list is reranked (the packaged bi-encoder is English), whose rank is fs_rank itself
    members = ["bm25", "dense"] if s.language == "en" else ["dense"]
    cheap = ["fs_rank", "fs_score"] + [f"{k}_{m}" for m in members for k in ("rank", "score")] + [
        "bm25", "coverage", "cosine", "doc_len", "query_len", "len_ratio", "bm25_qrank", "bm25_qz", "bm25_qgap",
        "cosine_qrank", "cosine_qz", "cosine_qgap"] + (["freshness"] if s.dates else [])
    judged = ", ".join(f"{k}: {v} queries" for k, v in sorted(s.splits.items()))
    lines = [
        f"# fusion-ltr config for {s.folder.name}, written by `fusion-ltr init`: {s.documents} documents, "
        f"{s.queries} queries,",
        f"# judged: {judged}. Run it with: fusion-ltr run --config <this file>",
        "# Every key is documented in docs/configuration.md; configs/ holds complete examples.",
        "",
        "[dataset]",
        f'name = "{s.folder.as_posix()}"',
        f'splits = [{", ".join(repr(x).replace(chr(39), chr(34)) for x in ([train, test] if train else [test]))}]',
        f'test_split = "{test}"',
    ]
    if s.language == "zh":
        lines += [f'language = "zh"   # detected: {s.chinese:.0%} of the letters are Chinese characters (jieba words)']
    lines += [
        "",
        "# candidates: BM25 and the packaged MiniLM bi-encoder, fused by reciprocal rank fusion; the top 100",
        "[retrieval]",
        'systems = ["bm25", "dense", "hybrid"]',
        "k = 100",
        "",
        "[run]",
        f'dir = "{run_dir}"',
        "",
        "[features]",
        'candidates = "hybrid"' if s.language == "en" else
        'candidates = "bm25"   # the packaged bi-encoder is English: online, name a multilingual one and use "hybrid"',
        "",
        "# the signals, one extractor each (docs/features.md); values are stored, never computed twice",
        "[features.extractors.first_stage]",
        f"retrievers = {_toml_list(members)}",
        "[features.extractors.bm25]",
        "[features.extractors.coverage]",
        "[features.extractors.biencoder]",
        "[features.extractors.length]",
    ]
    if s.dates:
        lines += ["[features.extractors.freshness]   # the documents have dates (metadata.date)"]
    if train:
        lines += [
            "# a cross-encoder fine-tuned on your training queries by the run's finetune-ce step (half of them; the",
            "# ranker learns from the other half, so it never sees scores of queries the model learned)",
            "[features.extractors.crossencoder]",
            f'model = "{run_dir}/crossencoder/model"',
            "",
            "[finetune.params]",
            "max_queries = 100   # a CPU budget: about 10 minutes on 2 cores; raise it on a GPU",
            "epochs = 1.0",
        ]
    lines += [
        "",
        "[ranker]",
        'params = "auto"     # booster settings chosen by cross-validation on the training queries',
        "# a model not better than the first stage on held-out training queries serves the first stage's order",
        'guard = "fallback"',
        'normalize = ["bm25", "cosine"]   # per-query rank, z-score and gap to the best of these scores',
    ]
    if train:
        lines += [
            f"budget_ms = {budget_ms:g}   # per query: the cascade's keep values are planned to fit it by the measured costs",
            "",
            "# stage 1: the cheap signals on every candidate; stage 2: the cross-encoder on the documents it keeps",
            "[[ranker.cascade]]",
            f"features = {_toml_list(cheap)}",
            "keep = 20",
            "[[ranker.cascade]]",
            'features = ["ce_score"]',
        ]
    else:
        lines += [
            f"# one judged split ({test}): the evaluation cross-validates on its queries, and the model served is",
            "# trained on all of them. Add qrels/train.tsv to learn a cross-encoder and serve a cascade.",
            "cv_folds = 5",
        ]
    return "\n".join(lines) + "\n"


def _toml_list(names: list[str]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def write_config(data: str | Path, output: str | Path | None = None, *, run_dir: str | None = None,
                 budget_ms: float = 1000.0, force: bool = False) -> tuple[Path, DataSummary]:
    """Write the config for ``data`` to ``output`` (default: ``configs/<name>.toml``) and return its path."""
    summary = summarise(data)
    name = summary.folder.name
    output = Path(output) if output else Path("configs") / f"{name}.toml"
    if output.exists() and not force:
        raise UsageError(f"{output} exists; choose another --output or pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(config_text(summary, run_dir or f"runs/{name}", budget_ms), encoding="utf-8")
    from .config import load_config

    load_config(output)  # what it wrote parses and validates
    return output, summary
