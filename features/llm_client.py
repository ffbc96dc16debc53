"""A client of an OpenAI-compatible chat completions endpoint, for the LLM features and labels.

Any server that speaks ``POST {base_url}/chat/completions`` (vLLM, Ollama, llama.cpp's server, a hosted
API) can grade pairs: :class:`ChatEndpoint` sends one request per prompt (``max_concurrency`` at a
time), with a timeout, retries with exponential backoff on connection errors, timeouts, 429 and 5xx
(never on another 4xx: the request itself is wrong, and the server's message is raised), and counts
what it spent (:class:`Usage`: requests, retries, tokens, seconds) for the build's cost line. The API key
is read from the environment variable the config names, never from the config itself.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from retrieval.errors import UsageError
from retrieval.models import require

INSTALL = "pip install 'fusion-ltr[llm]'"
RETRIED_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(UsageError):
    """The endpoint did not answer usably after its retries (the message names it and the last error)."""


@dataclass
class Usage:
    """What the client spent: ``requests`` answered, ``retries``, ``failures`` (requests that gave up),
    prompt and completion ``tokens`` as the server reported them, and wall ``seconds``."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.requests} requests ({self.retries} retries, {self.failures} failed), {self.prompt_tokens:,} "
                f"prompt + {self.completion_tokens:,} completion tokens, {self.seconds:.1f} s")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    """The first choice of an answer: its text, and the top log-probabilities of its first token (token ->
    logprob; empty when the server gives none)."""

    text: str
    top_logprobs: dict[str, float]


class ChatEndpoint:
    """``POST {base_url}/chat/completions`` of an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, max_concurrency: int = 4):
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"endpoint base_url: expected an http(s) URL such as http://localhost:8000/v1, found "
                             f"{base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_concurrency = max(1, int(max_concurrency))
        self.usage = Usage()
        self._lock = threading.Lock()
        self._client = None

    def _http(self):
        if self._client is None:
            httpx = require("httpx", INSTALL)
            key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            self._client = httpx.Client(timeout=self.timeout_s, headers=headers)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def complete(self, messages: list[dict], *, max_tokens: int = 1, top_logprobs: int = 20) -> Choice:
        """One chat completion (temperature 0), retried as the module docstring says."""
        httpx = require("httpx", INSTALL)
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if top_logprobs:
            body |= {"logprobs": True, "top_logprobs": top_logprobs}
        last = None
        t0 = time.perf_counter()
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    self.usage.retries += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._http().post(self.url, json=body)
            except httpx.HTTPError as exc:  # connection refused, timeouts, ...
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRIED_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                with self._lock:
                    self.usage.failures += 1
                raise EndpointError(f"{self.url} refused the request (HTTP {response.status_code}): "
                                    f"{response.text[:300]}")
            try:
                choice = parse_choice(response.json())
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                with self._lock:
                    self.usage.failures += 1
                raise EndpointError(f"{self.url}: expected an OpenAI chat completion (choices[0].message.content), "
                                    f"found {response.text[:200]!r} ({exc})") from None
            usage = response.json().get("usage") or {}
            with self._lock:
                self.usage.requests += 1
                self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
                self.usage.seconds += time.perf_counter() - t0
            return choice
        with self._lock:
            self.usage.failures += 1
            self.usage.seconds += time.perf_counter() - t0
        raise EndpointError(f"{self.url} did not answer after {self.retries + 1} tries (timeout {self.timeout_s:g} s); "
                            f"last error: {last}")

    def complete_many(self, prompts: list[list[dict]], **kwargs) -> list[Choice]:
        """:meth:`complete` for each prompt, ``max_concurrency`` at a time, answers in the prompts' order."""
        if self.max_concurrency == 1 or len(prompts) <= 1:
            return [self.complete(p, **kwargs) for p in prompts]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(lambda p: self.complete(p, **kwargs), prompts))


def parse_choice(answer: dict) -> Choice:
    """The first choice of an OpenAI chat completion answer, with its first token's top log-probabilities."""
    choice = answer["choices"][0]
    text = choice["message"]["content"] or ""
    top = {}
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        for entry in content[0].get("top_logprobs") or []:
            top[str(entry["token"])] = max(float(entry["logprob"]), top.get(str(entry["token"]), float("-inf")))
        if not top and "token" in content[0]:
            top[str(content[0]["token"])] = float(content[0]["logprob"])
    return Choice(text, top)
