"""The configuration reference is generated from the config dataclasses and kept current."""

import dataclasses
from pathlib import Path

from ranker.cli import main
from ranker.config import Config, RankerConfig
from ranker.config_docs import field_comments, reference

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_md_is_the_generated_reference():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference(), "docs/configuration.md is stale: run `fusion-ltr config-docs`"


def test_every_key_is_documented_with_its_meaning_and_allowed_values(tmp_path):
    out = tmp_path / "configuration.md"
    assert main(["config-docs", "--output", str(out)]) == 0
    text = out.read_text()
    for f in dataclasses.fields(Config):
        if f.name != "source":
            assert f"## `[{f.name}]`" in text
    assert "## `[[ranker.cascade]]`" in text and "## `[ranker.params]`" in text
    assert "## `[features.extractors.crossencoder]`" in text  # every registered extractor's parameters
    guard = next(line for line in text.splitlines() if line.startswith("| `guard` |"))
    assert '`"fallback"`, `"blend"`, `"warn"`' in guard and "first stage" in guard
    assert all(line.rstrip().split("|")[-2].strip() for line in text.splitlines() if line.startswith("| `"))


def test_a_field_comment_above_and_beside_is_its_meaning():
    @dataclasses.dataclass
    class Example:
        # spread over
        # two lines
        a: int = 1
        b: str = "x"  # beside
        c: float = 0.0

    notes = field_comments(Example)
    assert notes == {"a": "spread over two lines", "b": "beside"}
    assert "budget" in field_comments(RankerConfig)["budget_ms"]
