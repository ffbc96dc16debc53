"""The fuzzing harness of benchmarks/fuzz.py, briefly: generated requests against a served tiny model and
generated document lists against its Scorer give a 2xx or a 4xx in the error shape, never a 5xx, and never
change another request's answer (the benchmark runs 10,000 of each)."""

import pytest

pytest.importorskip("fastapi")

from benchmarks.fuzz import Findings, fuzz_scorer, fuzz_service, tiny_run  # noqa: E402
from ranker import Scorer  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("fuzz"))


def test_generated_requests_never_get_a_5xx_or_touch_another_request(run):
    from fastapi.testclient import TestClient

    from ranker.service import create_app

    findings = Findings()
    with TestClient(create_app(Scorer.load(run)), raise_server_exceptions=False) as client:
        fuzz_service(client, 150, findings)
    assert findings.violations == []
    assert findings.n == 150 and findings.status.get(200, 0) > 0 and findings.status.get(422, 0) > 0


def test_generated_document_lists_rank_or_raise_the_projects_error(run):
    findings = Findings()
    fuzz_scorer(Scorer.load(run), 150, findings)
    assert findings.violations == [] and findings.n == 150 and findings.status.get(200, 0) > 0
