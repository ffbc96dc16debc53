"""Text analysis: how a text becomes the terms BM25 and the lexical features count.

One :class:`Analyzer` serves the BM25 index, the ``bm25``/``bm25_fields``/``coverage``/``length``
features and the Scorer (they build it from the same three parameters, so indexing, training and
serving see the same terms):

- ``segmenter``: ``"words"`` splits on word characters as bm25s does (runs of two or more ``\\w``: for
  English and other languages written with spaces); ``"jieba"`` segments Chinese into words with jieba's
  search mode (a long word also yields the shorter words inside it, as search engines index Chinese);
  ``"bigrams"`` gives overlapping character pairs of each Chinese run (no dictionary). Both Chinese
  segmenters keep the Latin words and numbers of mixed text as words.
- ``stemmer``: a PyStemmer language applied to each term (for ``jieba``/``bigrams`` only to Latin
  terms), or none.
- ``stopwords``: a bm25s stop-word list (``"en"``, ``"zh"``, ``"de"``, ...), or none.

``[dataset] language`` names a profile (:data:`LANGUAGES`) that fills in the three parameters of every
component whose table does not set them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from .errors import UsageError
from .models import require

INSTALL = "pip install bm25s PyStemmer"
JIEBA_INSTALL = "pip install 'fusion-ltr[zh]'"
SEGMENTERS = ("words", "jieba", "bigrams")
ANALYSIS_KEYS = ("segmenter", "stemmer", "stopwords")
#: ``[dataset] language`` -> the analysis its components default to
LANGUAGES: dict[str, dict] = {
    "en": {"segmenter": "words", "stemmer": "english", "stopwords": "en"},
    "zh": {"segmenter": "jieba", "stemmer": None, "stopwords": "zh"},
}

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_CJK_RUN = re.compile(rf"{_CJK.pattern}+")
_LATIN = re.compile(r"[^\W_]+")  # a run of letters and digits between Chinese runs


def cjk_share(texts) -> float:
    """The share of letters in ``texts`` that are Chinese characters (0.0 for no letter at all)."""
    cjk = letters = 0
    for t in texts:
        t = t or ""
        cjk += len(_CJK.findall(t))
        letters += sum(ch.isalpha() for ch in t)
    return cjk / letters if letters else 0.0


#: the share of Chinese characters among its letters from which a text is taken for Chinese
CHINESE = 0.3


def detect_language(texts) -> tuple[str, float]:
    """``("zh", share)`` when at least :data:`CHINESE` of the letters of ``texts`` are Chinese characters,
    else ``("en", share)``."""
    share = cjk_share(texts)
    return ("zh" if share >= CHINESE else "en"), share


def language_warning(texts, segmenter: str) -> str | None:
    """A warning when ``texts`` (a sample of the corpus) are mostly Chinese but ``segmenter`` splits on
    spaces, where each clause would become one term; else None."""
    language, share = detect_language(texts)
    if segmenter != "words" or language != "zh":
        return None
    return (f"{share:.0%} of the letters in the corpus are Chinese characters, but the analyzer splits on spaces "
            '(segmenter = "words"), so each clause becomes one term: set [dataset] language = "zh"')


@lru_cache(maxsize=None)
def _stopwords(name: str | None) -> frozenset[str]:
    if not name:
        return frozenset()
    tokenization = require("bm25s.tokenization", INSTALL)
    return frozenset(tokenization._infer_stopwords(name))


@lru_cache(maxsize=None)
def _jieba():
    jieba = require("jieba", JIEBA_INSTALL)
    jieba.setLogLevel(60)  # its dictionary-loading messages are not the run's
    jieba.initialize()
    return jieba


@dataclass(frozen=True)
class Analyzer:
    segmenter: str = "words"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self):
        if self.segmenter not in SEGMENTERS:
            raise UsageError(f"analyzer segmenter: expected one of {list(SEGMENTERS)}, found {self.segmenter!r}")

    @classmethod
    def of(cls, params) -> "Analyzer":
        """The analyzer a component's parameters name (any object with the three fields)."""
        return cls(**{k: getattr(params, k) for k in ANALYSIS_KEYS})

    def _stem(self):
        return require("Stemmer", INSTALL).Stemmer(self.stemmer) if self.stemmer else None

    def segments(self, text: str) -> list[str]:
        """The text's units before stop words and stemming (no punctuation or spaces; the Chinese segmenters
        lower-case and fold full-width forms first):
        what a length counts."""
        if self.segmenter == "words":  # every run of word characters, as lengths have always counted
            return re.findall(r"\w+", text or "")
        text = unicodedata.normalize("NFKC", text or "").lower()  # full-width letters and digits as ASCII
        if self.segmenter == "jieba":
            return [t for t in (s.strip() for s in _jieba().cut_for_search(text)) if t and re.search(r"\w", t)]
        out: list[str] = []
        pos = 0
        for run in _CJK_RUN.finditer(text):
            out.extend(_LATIN.findall(text[pos:run.start()]))
            chars = run.group()
            out.extend([chars] if len(chars) == 1 else [chars[i:i + 2] for i in range(len(chars) - 1)])
            pos = run.end()
        out.extend(_LATIN.findall(text[pos:]))
        return out

    def tokenize(self, texts) -> list[list[str]]:
        """Each text's terms: segments, less stop words, stemmed."""
        texts = list(texts)
        if self.segmenter == "words":  # bm25s' own tokenizer, as the index has always used
            bm25s = require("bm25s", INSTALL)
            return bm25s.tokenize(texts, lower=True, stopwords=self.stopwords or [], stemmer=self._stem(),
                                  return_ids=False, show_progress=False)
        stop, stemmer = _stopwords(self.stopwords), self._stem()
        out = []
        for text in texts:
            terms = [t for t in self.segments(text) if t not in stop]
            if stemmer is not None:
                terms = [t if _CJK.search(t) else stemmer.stemWord(t) for t in terms]
            out.append(terms)
        return out
