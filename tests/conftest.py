"""Shared fixtures: a tiny BEIR-format dataset written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.data import find_dataset, DatasetNotFoundError

DOCS = [
    {"_id": "d1", "title": "Cats", "text": "The cat sat on the mat and purred.", "metadata": {"date": "1970-01-01"}},
    {"_id": "d2", "title": "Dogs", "text": "Dogs bark loudly at the mail carrier.", "metadata": {"date": "1979-06-01"}},
    {"_id": "d3", "title": "Quantum", "text": "Qubits enable quantum computing algorithms.", "metadata": {}},
    {"_id": "d4", "title": "", "text": ""},
    {"_id": "d5", "title": "Bread", "text": "Baking sourdough bread needs a starter culture."},
    {"_id": "d6", "title": "Felines", "text": "Domestic cats are small carnivorous mammals."},
]
QUERIES = [
    {"_id": "q1", "text": "cat on a mat"},
    {"_id": "q2", "text": "quantum computers"},
    {"_id": "q3", "text": "how to bake bread"},
    {"_id": "q4", "text": "barking dogs"},
]
QRELS = {"train": [("q1", "d1", 1), ("q1", "d6", 1), ("q2", "d3", 1)], "test": [("q3", "d5", 1), ("q4", "d2", 1)]}


def write_beir(folder: Path, docs=DOCS, queries=QUERIES, qrels=QRELS) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    return write_beir(tmp_path / "tiny")


def shared_dataset(name: str) -> Path:
    """The folder of a real dataset in ../shared/data, or skip the test."""
    try:
        return find_dataset(name)
    except DatasetNotFoundError:
        pytest.skip(f"dataset {name} not on the search path")
