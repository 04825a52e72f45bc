"""The device install for real: `.[edge]` alone in its own venv (numpy 2, no TensorFlow, aiohttp,
matplotlib or annoy; `make edge-venv`, which `make test` runs first) runs every device command
on the real int8 bundle: --help, classify, index, search, enroll, run on a video with an outbox,
sync to a server started from the full install, bench."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from shelfsight.edge.runtime.results import check_result
from shelfsight.tools.server.faults import free_port
from sync_fakes import TOKEN, token_file

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / ".venv-edge" / "bin"

pytestmark = pytest.mark.skipif(not (EDGE / "shelfsight").exists(),
                                reason="no device venv: `make edge-venv` (make test builds it) installs .[edge] alone")


def edge(*args, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """A command of the device install, run outside the checkout (whose shelfsight/ would shadow it)."""
    return subprocess.run([str(EDGE / "shelfsight"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def errors(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("INFO: ")]


def test_the_device_venv_is_a_device_install(tmp_path):
    script = ("import importlib.util as u, numpy, json; print(json.dumps({'numpy': numpy.__version__, 'missing': "
              "[m for m in ('tensorflow', 'aiohttp', 'matplotlib', 'annoy', 'cv2', 'ai_edge_litert') "
              "if u.find_spec(m) is None]}))")
    out = subprocess.run([str(EDGE / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    found = json.loads(out.stdout)
    assert found["numpy"].startswith("2.") and found["missing"] == ["tensorflow", "aiohttp", "matplotlib", "annoy"]


def test_help_and_a_missing_extra(tmp_path):
    listing = edge("--help", cwd=tmp_path)
    assert listing.returncode == 0 and "classify" in listing.stdout and "sync-server" in listing.stdout
    server = edge("sync-server", "--help", cwd=tmp_path)
    assert server.returncode == 1 and errors(server) == [
        "error: 'sync-server' needs aiohttp, which is not installed: pip install 'shelfsight[server]'"]
    # train imports TensorFlow only when it runs: the same one line then, not a traceback
    train = edge("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert train.returncode == 1 and errors(train) == [
        "error: 'train' needs tensorflow, which is not installed: pip install 'shelfsight[train]'"]


def test_classify_index_search_enroll_on_the_device_install(int8_bundle, sample_data, tmp_path):
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image

    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    banana = sample_data / "val" / "Fruit" / "Banana" / "Banana_001.jpg"
    out = edge("classify", bundle, banana, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(out.stdout)
    check_result(record)
    with Recognizer.create_from_bundle(int8_bundle, top_k=3, search_k=0) as rec:  # the full install's answer
        here = rec.classify(read_image(banana))
    assert (record["label"], record["score"]) == (here.label, pytest.approx(here.score, abs=1e-5))

    indexed = edge("index", bundle, "--catalog", sample_data, cwd=tmp_path, timeout=300)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    spec = json.loads((bundle / "index.json").read_text())
    assert spec["backend"] == "exact"  # no annoy on this install: exact, and it says why
    iconic = sample_data / "iconic-images-and-descriptions" / "Fruit" / "Banana" / "Banana_Iconic.jpg"
    found = json.loads(edge("search", bundle, iconic, "--json", "-k", "2", cwd=tmp_path).stdout)
    assert found["matches"][0]["item_id"] == "Banana" and found["matches"][0]["similarity"] > 0.99

    kiwi = sample_data / "val" / "Fruit" / "Kiwi" / "Kiwi_003.jpg"
    enrolled = edge("enroll", bundle, kiwi, "--sku", "KIWI-GOLD", "--name", "Gold kiwi", cwd=tmp_path)
    assert enrolled.returncode == 0 and json.loads(enrolled.stdout) == {"enrolled": "KIWI-GOLD", "photos": 1,
                                                                        "skipped": 0}
    again = json.loads(edge("search", bundle, kiwi, "--json", "-k", "1", cwd=tmp_path).stdout)
    assert again["matches"][0]["item_id"] == "KIWI-GOLD"


def test_run_a_video_and_sync_it_to_a_server_of_the_full_install(int8_bundle, sample_data, tmp_path):
    from shelfsight.tools.make_video import make_video

    fruit = sample_data / "val" / "Fruit"
    video = make_video([fruit / "Banana" / "Banana_001.jpg", fruit / "Kiwi" / "Kiwi_003.jpg"], tmp_path / "v.avi",
                       fps=10, hold=12, gap=6)
    port, tokens = free_port(), token_file(tmp_path)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "shelfsight", "sync-server", "--port", str(port),
                               "--data-dir", str(tmp_path / "server"), "--token-file", str(tokens)],
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(url)
        ran = edge("run", int8_bundle, "--source", video, "--sink", f"jsonl:{tmp_path / 'events.jsonl'}",
                   "--outbox", tmp_path / "outbox.db", "--endpoint", url, "--token-file", tokens,
                   "--device-id", "cam-1", cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr[-2000:]
        events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert len(events) >= 2 and all(check_result(e) is None for e in events)
        sent = edge("sync", "--once", "--outbox", tmp_path / "outbox.db", "--endpoint", url, "--token-file", tokens,
                    cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr[-2000:]
        stats = requests.get(url + "/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
        assert stats["events"] == len(events)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_bench_without_plots(int8_bundle, tmp_path):
    out = edge("bench", int8_bundle, "--threads", "1", "--min-time", "0.2", "--warmup", "2", "--min-runs", "5",
               "--rounds", "2", "--out", tmp_path / "bench", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir() if p.is_file()) == ["bench.json", "report.md"]
    assert ("bench plots skipped: matplotlib is not installed (pip install 'shelfsight[plots]')" in out.stderr)
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert report["targets"][0]["runs"][0]["latency"]["p50_ms"] > 0


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=0.5).json() == {"ok": True}:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")
