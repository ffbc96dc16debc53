"""An LLM's relevance grade of a (query, document) pair: a pointwise prompt reranker as a feature.

The LLM is asked, in a chat prompt, to grade the document for the query on a 0-3 scale and answer with
one digit; ``llm_grade`` is the expected grade under the model's next-token probabilities of the four
digits (renormalised over them), so it orders pairs finely where a sampled digit would tie them. Two
backends, the same prompt:

- ``backend = "local"``: a causal LM run here (the packaged multilingual Qwen2.5 0.5B by default, any
  packaged GGUF LM of :mod:`features.lm_likelihood`, a local folder or a hub name), the digits' logits
  read at the answer position; a GPU when there is one.
- ``backend = "endpoint"``: any OpenAI-compatible server (``base_url``: vLLM, Ollama, llama.cpp's server,
  a hosted API; :mod:`features.llm_client`), one request per pair with ``max_tokens = 1`` and the first
  token's ``top_logprobs``; a server that returns no log-probabilities gives the digit it answered. Each
  build logs what the endpoint spent (requests, retries, tokens, seconds).

Costly: on a CPU it belongs on a cascade's last stage, for a few documents per query.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.errors import UsageError
from retrieval.frames import QUERY, doc_text

from .base import BaseExtractor
from .lm_likelihood import INSTALL, QWEN_LM, kept_logits, load_causal_lm

log = logging.getLogger("fusion_ltr.features")

GRADES = ("0", "1", "2", "3")
#: language -> (system message, user message with {query} and {document})
PROMPTS = {
    "en": ("You grade search results. Answer with one digit: 3 if the document answers the query, 2 if it is "
           "about the query and answers part of it, 1 if it is related but does not answer it, 0 if it is unrelated.",
           "Query: {query}\n\nDocument: {document}\n\nGrade (0-3):"),
    "zh": ("你是搜索结果的评审。只用一个数字回答：文档回答了问题为3，与问题有关并回答了一部分为2，相关但没有回答为1，无关为0。",
           "问题：{query}\n\n文档：{document}\n\n评分（0-3）："),
}


@dataclass(frozen=True)
class GradeParams:
    backend: Literal["local", "endpoint"] = "local"  # "local": a causal LM run here; "endpoint": an OpenAI-compatible server
    # local: a packaged GGUF LM, a local folder or a hub name; endpoint: the model name the server serves
    model: str = QWEN_LM
    base_url: str = ""  # endpoint: the server's OpenAI-compatible base URL, e.g. http://localhost:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # endpoint: the environment variable holding the API key (may be unset)
    timeout_s: float = 60.0  # endpoint: seconds per request before it is retried
    retries: int = 3  # endpoint: retries of a request (connection errors, timeouts, 429, 5xx), with backoff
    max_concurrency: int = 4  # endpoint: requests in flight at once
    language: Literal["en", "zh"] = "en"  # the prompt's language (features.llm_grade.PROMPTS)
    doc_tokens: int = 256  # document budget: LM tokens (local), about 4 characters each (endpoint)
    model_batch_size: int = 4  # local: pairs per model call
    device: str = "auto"  # local: "auto" (a GPU when there is one), "cpu", "cuda": never changes a value
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 32  # pairs per batch of the feature build (stored as each batch completes)


def expected_grade(logprobs: dict[str, float]) -> float:
    """The expected grade under the probabilities of the grade digits among ``logprobs`` (token -> log
    probability; tokens compared stripped), renormalised over the digits present; NaN when none is."""
    found = {}
    for token, lp in logprobs.items():
        t = token.strip()
        if t in GRADES and math.isfinite(lp):
            found[t] = max(lp, found.get(t, -math.inf))
    if not found:
        return math.nan
    top = max(found.values())
    weights = {g: math.exp(lp - top) for g, lp in found.items()}
    return sum(int(g) * w for g, w in weights.items()) / sum(weights.values())


class LLMGradeExtractor(BaseExtractor):
    """``llm_grade``: an LLM's expected 0-3 relevance grade of the pair (see the module docstring)."""

    name = "llm_grade"
    CODE_VERSION = "1"
    Params = GradeParams
    FEATURES = {"llm_grade": "an LLM's expected 0-3 relevance grade (next-token probabilities of the digits)"}

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        if self.params.backend == "endpoint" and not self.params.base_url:
            raise UsageError("features.llm_grade: backend = \"endpoint\" needs base_url (e.g. "
                             "\"http://localhost:8000/v1\"), found none")
        self._model = self._tok = self._client = None
        self.device = None

    # -- the prompt -------------------------------------------------------------------------
    def messages(self, query: str, document: str) -> list[dict]:
        system, user = PROMPTS[self.params.language]
        return [{"role": "system", "content": system},
                {"role": "user", "content": user.format(query=query, document=document)}]

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        queries, docs = pairs[QUERY].tolist(), doc_text(pairs)
        if self.params.backend == "endpoint":
            return {"llm_grade": self._endpoint(queries, docs)}
        return {"llm_grade": self._local(queries, docs)}

    # -- an OpenAI-compatible endpoint ------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from .llm_client import ChatEndpoint

            p = self.params
            self._client = ChatEndpoint(p.base_url, p.model, api_key_env=p.api_key_env, timeout_s=p.timeout_s,
                                        retries=p.retries, max_concurrency=p.max_concurrency)
        return self._client

    def _endpoint(self, queries, docs) -> np.ndarray:
        budget = 4 * self.params.doc_tokens
        prompts = [self.messages(q, d[:budget]) for q, d in zip(queries, docs)]
        before = self.client.usage.requests
        answers = self.client.complete_many(prompts, max_tokens=1, top_logprobs=20)
        out = np.array([expected_grade(a.top_logprobs) if a.top_logprobs else _digit(a.text) for a in answers])
        log.info("llm_grade: %d pairs from %s (%s so far: %s)", self.client.usage.requests - before, self.client.url,
                 self.params.model, self.client.usage.line())
        return out

    # -- a local causal LM ------------------------------------------------------------------
    def _load(self):
        if self._model is None:
            self._model, self._tok, self.device = load_causal_lm(self.local_path(self.params.model), self.params.device)
            self._grade_ids = [self._tok(g, add_special_tokens=False).input_ids[-1] for g in GRADES]
        return self._model, self._tok

    def _encode(self, query: str, doc: str) -> list[int]:
        tok = self._tok
        doc = tok.decode(tok(doc, add_special_tokens=False).input_ids[: self.params.doc_tokens])
        messages = self.messages(query, doc)
        if getattr(tok, "chat_template", None):  # the template's text holds its own special tokens
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False).input_ids
        text = f"{messages[0]['content']}\n\n{messages[1]['content']}"
        return tok(text).input_ids

    def _local(self, queries, docs) -> np.ndarray:
        from retrieval.models import require

        torch = require("torch", INSTALL)
        model, tok = self._load()
        encoded = [self._encode(q, d) for q, d in zip(queries, docs)]
        out = np.full(len(encoded), np.nan)
        order = np.argsort([-len(e) for e in encoded], kind="stable")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for start in range(0, len(encoded), self.params.model_batch_size):
            idx = order[start:start + self.params.model_batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            keep = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
                keep[row, len(encoded[i]) - 1] = True  # the answer position
            with torch.inference_mode():
                logits = kept_logits(model, ids.to(self.device), mask.to(self.device), keep.to(self.device)).float()
            logp = torch.log_softmax(logits, dim=-1)[:, self._grade_ids].cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = expected_grade(dict(zip(GRADES, logp[row].tolist())))
        return out


def _digit(text: str) -> float:
    """The first grade digit of an answer without log-probabilities; NaN when it has none."""
    for ch in text:
        if ch in GRADES:
            return float(ch)
    return math.nan
