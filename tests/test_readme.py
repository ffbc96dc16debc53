"""The README is for users: short, and every command in it runs as written.

Each fenced ``bash`` / ``python`` block is run, in order, in a fresh folder that holds ``mydata/`` (a small
collection of another domain than the demo's, in BEIR form: the README's "your own data"), with the
project's ``.venv`` on the PATH. A block is marked by the HTML comment above it:

- ``readme-test: own data``: run as written there;
- ``readme-test: server``: started in the background (the service), then the next blocks talk to it;
- ``readme-test: needs runs/demo-app``: made by ``make demo`` (20 minutes, not in CI time): run, as written,
  from the repository root when that run folder is there, else skipped;
- a block with no mark: ``make`` commands (the two commands themselves), not run here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ranker.test_init import cooking

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(mark, language, code) of every fenced block, in order (mark: "" when unmarked)."""
    return [(m["mark"] or "", m["lang"], m["code"]) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def test_the_readme_is_short_and_every_block_is_accounted_for():
    assert README.stat().st_size <= 15 * 1024
    found = blocks()
    assert found, "no code blocks found"
    for mark, lang, code in found:
        assert mark.split(" (")[0] in {"", "own data", "server", "needs runs/demo-app"}, mark
        if not mark:  # only the two make commands go unrun
            assert all(line.startswith("make ") for line in code.splitlines() if line.strip()), code
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", README.read_text())
    assert links and all((ROOT / link).exists() for link in links), [x for x in links if not (ROOT / x).exists()]


def env_with_venv() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def run_block(lang: str, code: str, cwd: Path, env: dict) -> str:
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README block failed ({done.returncode}):\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_own_data_blocks_run_as_written(tmp_path):
    """init -> run -> Scorer -> serve -> curl, on a collection the test builds (another domain than the demo's)."""
    cooking(tmp_path / "mydata")
    env = env_with_venv()
    port = free_port()
    outputs, server = [], None
    try:
        for mark, lang, code in blocks():
            if mark.startswith("own data"):
                if server is not None:  # the README's port is the service's default; the test uses a free one
                    code = code.replace("localhost:8000", f"localhost:{port}")
                outputs.append(run_block(lang, code, tmp_path, env))
            elif mark == "server":
                if lang != "bash" or shutil.which("curl") is None:
                    pytest.skip("the service block needs bash and curl")
                code = code.replace("--port 8000", f"--port {port}")
                server = subprocess.Popen(["bash", "-c", f"exec {code.strip()}"], cwd=tmp_path, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True)
                wait_healthy(port, server)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    train_out, search_out, curl_out, rerank_out, frameworks_out = outputs
    assert "run it:  fusion-ltr run --config configs/mydata.toml" in train_out
    result = json.loads((tmp_path / "runs" / "mydata" / "eval" / "test" / "ranker.json").read_text())
    assert "lambdamart" in result["means"] and "first stage" in result["means"]
    manifest = json.loads((tmp_path / "runs" / "mydata" / "model" / "manifest.json").read_text())
    assert manifest["kind"] == "fusion-ltr cascade" and manifest["planned"]["budget_ms"] > 0  # planned by cost
    top = search_out.splitlines()[0].split()
    assert top[0] == "1" and top[2] == "r0"  # the tomato basil soup recipe first
    assert '"relevance_score"' in curl_out and '"index":0' in curl_out.replace(" ", "")
    assert '"queries": 5' in rerank_out and (tmp_path / "reranked.trec").exists()
    for framework in ("langchain", "llamaindex", "haystack"):  # the soup recipe first in each
        assert f"{framework} Tomato basil soup, simmered slowly." in frameworks_out, frameworks_out
    assert "fusion" in frameworks_out and "ndcg_cut_10" in frameworks_out


def wait_healthy(port: int, server: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            raise AssertionError(f"the service exited ({server.returncode}): {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the service did not answer /healthz in time")


@pytest.mark.skipif(not (ROOT / "runs" / "demo-app" / "model" / "manifest.json").exists(),
                    reason="runs/demo-app is made by `make demo` (20 minutes)")
def test_the_app_quickstart_runs_after_make_demo():
    (code,) = [c for m, lang, c in blocks() if m == "needs runs/demo-app" and lang == "python"]
    out = run_block("python", code, ROOT, env_with_venv())
    lines = out.strip().splitlines()
    assert len(lines) == 5
    about = {"Statins lower LDL cholesterol.", "Statin therapy reduces heart attacks.",
             "LDL receptors clear cholesterol from blood.", "Cholesterol synthesis in the liver."}
    top = [line.split(maxsplit=3)[3] for line in lines[:4]]
    assert set(top) == about, top  # the statin and cholesterol texts first, whatever their order in the list
