"""Hardening, the low items: each with its regression test."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np
import pytest
from aiohttp import web

from shelfsight.bundle import UNPACKED_PREFIX, load_bundle, pack_archive, write_manifest
from shelfsight.edge.runtime.recognizer import Recognizer
from shelfsight.edge.pipeline.runner import RunSummary
from shelfsight.edge.pipeline.sinks import JsonlSink
from shelfsight.edge.sync.outbox import Outbox
from shelfsight.errors import BundleError, ConfigError, ModelError
from shelfsight.tools.server.config import read_token_file
from shelfsight.tools.server.store import parse_batch

from cli_run import run_cli
from tiny_bundle import make_tiny_bundle


def test_a_jsonl_file_ending_in_a_torn_line_gets_the_next_event_on_a_fresh_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "lab')  # a crash mid-write
    sink = JsonlSink(path)
    sink.emit({"id": "c"})
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"id": "a"}' and lines[1] == '{"id": "b", "lab' and json.loads(lines[2]) == {"id": "c"}


def test_a_summary_of_no_frames_is_valid_json(tmp_path):
    nan = float("nan")
    summary = RunSummary(frames=0, recognized=0, events=0, unknown=0, skipped={}, dropped=0, reopens=0,
                         sink_errors=0, duration_s=0.1, fps=0.0, latency_p50_ms=nan, latency_p99_ms=nan,
                         inference_p50_ms=nan, inference_p99_ms=nan, first_event_s=None, stopped_by="end of source")
    text = json.dumps(summary.to_dict(), allow_nan=False)
    assert json.loads(text)["latency_p50_ms"] is None


def test_the_outbox_file_is_readable_by_its_owner_only(tmp_path):
    with Outbox(tmp_path / "events.db") as box:
        box.put({"id": "e1"})
    assert stat.S_IMODE((tmp_path / "events.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("body, reason", [
    (b'{"events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "body is nested too deeply"),
    (b'{"events": [{"id": "a", "score": NaN}]}', "NaN is not a JSON number"),
    (b'{"events": [{"id": "a", "score": -Infinity}]}', "-Infinity is not a JSON number"),
])
def test_the_server_refuses_deep_and_non_finite_json_with_a_400(body, reason):
    with pytest.raises(web.HTTPBadRequest) as refused:
        parse_batch(body)
    assert json.loads(refused.value.text) == {"error": reason}


def test_a_short_shared_token_is_refused(tmp_path):
    (tmp_path / "t").write_text("x\n")
    with pytest.raises(ConfigError, match=r"the token has 1 characters, at least 12 are needed"):
        read_token_file(tmp_path / "t")
    (tmp_path / "t").write_text("a-long-enough-token\n")
    assert read_token_file(tmp_path / "t") == "a-long-enough-token"


def test_metrics_bind_loopback_unless_told():
    from shelfsight.edge.device import DeviceOptions
    from shelfsight.edge.runtime.options import RecognizerOptions

    assert DeviceOptions(RecognizerOptions("b"), source="0").metrics_host == "127.0.0.1"


# -- a .tar.gz bundle leaves no shelfsight-bundle-* folder behind -------------------------

@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """tempfile's folder for this test only (load_bundle unpacks archives there)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def archive(tmp_path):
    return pack_archive(make_tiny_bundle(tmp_path / "tiny"), tmp_path / "tiny.tar.gz")


def unpacked_copies(folder):
    return sorted(p.name for p in folder.glob(f"{UNPACKED_PREFIX}*"))


def test_archive_bundles_loaded_again_and_again_leave_no_folder_behind(tmp_path, temp_dir, archive, capsys):
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), (0, 0, 255), np.uint8))
    for _ in range(3):
        with load_bundle(archive) as bundle:
            assert bundle.unpacked and bundle.root.parent == temp_dir and (bundle.root / "model.tflite").is_file()
        assert not bundle.root.exists()
        bundle.close()  # twice: nothing happens
    for _ in range(3):
        rec = Recognizer.create_from_bundle(archive)
        root = rec.bundle.root
        assert rec.classify(cv2.imread(str(image))).label == "red"
        rec.close()
        rec.close()
        assert not root.exists()
    for _ in range(3):
        assert run_cli(["classify", archive, image], capsys)[0] == 0
    dropped = load_bundle(archive).root  # never closed: garbage collection removes it
    assert not dropped.exists()
    assert unpacked_copies(temp_dir) == []


def test_a_directory_bundle_is_never_removed(tmp_path):
    with load_bundle(make_tiny_bundle(tmp_path / "b")) as bundle:
        assert not bundle.unpacked
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_a_bundle_that_fails_to_load_from_an_archive_leaves_nothing(tmp_path, temp_dir):
    root = make_tiny_bundle(tmp_path / "bad")
    (root / "labels.txt").write_text("red\ngreen\nBLUE\n")  # no longer its sha256
    with pytest.raises(BundleError) as refused:  # named by the archive, not the folder it was unpacked to
        load_bundle(pack_archive(root, tmp_path / "bad.tar.gz"))
    assert str(refused.value) == (f"bundle {tmp_path}/bad.tar.gz: labels.txt does not match its sha256 "
                                  f"(altered or corrupt)")
    (root / "model.tflite").write_bytes(b"not a model")
    write_manifest(root, json.loads((root / "manifest.json").read_text()))
    with pytest.raises(ModelError) as refused:
        Recognizer.create_from_bundle(pack_archive(root, tmp_path / "bad2.tar.gz"))
    assert str(refused.value).startswith(f"{tmp_path}/bad2.tar.gz/model.tflite: not a loadable TFLite model (")
    assert unpacked_copies(temp_dir) == []


def test_the_process_exit_removes_an_unclosed_copy(tmp_path, archive):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    code = f"from shelfsight.bundle import load_bundle; b = load_bundle({str(archive)!r}); print(b.root)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().startswith(str(tmp_path / UNPACKED_PREFIX))
    assert unpacked_copies(tmp_path) == []


def test_copies_of_killed_processes_are_removed_at_the_next_load(temp_dir, archive):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, timeout=60)
    orphan = temp_dir / f"{UNPACKED_PREFIX}{dead.stdout.strip()}-killed"  # SIGKILL: no exit handler ran
    (orphan / "sub").mkdir(parents=True)
    (orphan / "sub" / "model.tflite").write_bytes(b"x" * 1000)
    alive = temp_dir / f"{UNPACKED_PREFIX}{os.getpid()}-inuse"
    alive.mkdir()
    unrelated = temp_dir / f"{UNPACKED_PREFIX}notapid"
    unrelated.mkdir()
    with load_bundle(archive):
        assert not orphan.exists()
    assert unpacked_copies(temp_dir) == sorted([alive.name, unrelated.name])


# -- a run without a token makes no file; device data files are 0600 ----------------------

@pytest.mark.parametrize("sync_args, made", [
    (["--outbox", "{tmp}/data/events.db"], "data"),
    (["--bundle-store", "{tmp}/store"], "store"),
])
def test_a_run_without_a_token_makes_no_outbox_or_store(tmp_path, capsys, monkeypatch, sync_args, made):
    monkeypatch.delenv("SHELFSIGHT_SYNC_TOKEN", raising=False)
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), (0, 0, 255), np.uint8))
    args = ["run", make_tiny_bundle(tmp_path / "b"), "--source", image, "--endpoint", "https://sync.example.com",
            *[a.replace("{tmp}", str(tmp_path)) for a in sync_args]]
    code, out, err = run_cli(args, capsys)
    assert (code, out, err) == (2, "", "error: no sync token: pass a token file or set $SHELFSIGHT_SYNC_TOKEN\n")
    assert not (tmp_path / made).exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_device_data_files_are_readable_by_their_owner_only(tmp_path, umask_022):
    from shelfsight.edge.catalog.enroll import EnrolledDelta, Enrolment
    from shelfsight.edge.catalog.items import CatalogItem

    with Outbox(tmp_path / "events.db") as box:
        box.put({"id": "e1"})
        sidecars = [p for p in tmp_path.glob("events.db-*")]
        assert {p.name for p in sidecars} == {"events.db-wal", "events.db-shm"}
        assert {p.name: mode(p) for p in sidecars} == {"events.db-wal": 0o600, "events.db-shm": 0o600}
    sink = JsonlSink(tmp_path / "events.jsonl")
    sink.emit({"id": "e1"})
    sink.close()
    delta = EnrolledDelta("0" * 64, 3, (Enrolment(1, CatalogItem("tea"), np.eye(3, dtype=np.float32)[:1]),))
    delta.save(tmp_path / "enrolled.npz")
    loaded = EnrolledDelta.load(tmp_path / "enrolled.npz")
    assert loaded.item_of_row == ("tea",) and np.array_equal(loaded.matrix, delta.matrix)
    (tmp_path / ".enrolled.npz.0.tmp").write_bytes(b"")  # a writer's leftover with the umask's mode
    assert {p.name: mode(p) for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")} == {
        "events.db": 0o600, "events.jsonl": 0o600, "enrolled.npz": 0o600}


def test_the_kiosks_kept_photos_and_their_database_are_readable_by_their_owner_only(tmp_path, umask_022):
    from shelfsight.edge.kiosk.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback")
    store.add("e1", "tea", "SKU-1", "Tea", "tea", "coffee", 0.4, "b1", np.zeros((8, 8, 3), np.uint8))
    kept = [p for p in (tmp_path / "feedback").rglob("*") if p.is_file()]
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in kept if "-" not in p.name} == {
        "feedback/feedback.db": 0o600, "feedback/photos/1.jpg": 0o600}


def test_an_atomic_write_with_a_mode_has_that_mode_whatever_was_left_behind(tmp_path, umask_022):
    from shelfsight.atomic import temp_path, write_text

    temp_path(tmp_path / "key").write_text("stale")
    os.chmod(temp_path(tmp_path / "key"), 0o644)
    write_text(tmp_path / "key", "secret", mode=0o600)
    write_text(tmp_path / "public", "hello")
    assert (mode(tmp_path / "key"), mode(tmp_path / "public")) == (0o600, 0o644)
    assert (tmp_path / "key").read_text() == "secret" and not temp_path(tmp_path / "key").exists()


# -- a missing camera: one-shot runs give up (exit 3), a service retries, warns once, counts ---

NO_CAMERA = "/dev/video7 does not exist (is the camera connected?)"


@pytest.fixture
def no_camera_7():
    if os.path.exists("/dev/video7"):
        pytest.skip("this machine has a /dev/video7")


@pytest.mark.parametrize("timeout_args", [["--source-timeout", "0.5"], []], ids=["--source-timeout", "--max-frames"])
def test_a_one_shot_run_gives_up_on_a_missing_camera_with_one_line(tmp_path, capsys, caplog, monkeypatch,
                                                                   no_camera_7, timeout_args):
    monkeypatch.setattr("shelfsight.edge.cli.recognize.ONE_SHOT_SOURCE_TIMEOUT_S", 0.5)  # 10 s for users
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="shelfsight.edge.pipeline.capture"):
        code, out, err = run_cli(["run", make_tiny_bundle(tmp_path / "b"), "--source", "7", "--max-frames", "1",
                                  *timeout_args], capsys)
    assert time.monotonic() - started < 5
    assert code == 3 and out == ""
    assert err.splitlines()[-1] == f"error: source camera:7: no frame for 0.5 s (open failed: {NO_CAMERA})"
    assert "Traceback" not in err
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"source camera:7 unavailable (open failed: {NO_CAMERA}); retrying with backoff for up to "
                        f"0.5 s (attempts are counted as reopens, logged at debug level)"]


def test_calibrate_on_a_missing_camera_is_one_line_and_exit_3(tmp_path, capsys, no_camera_7):
    code, out, err = run_cli(["calibrate", "7", "--out", tmp_path / "scene.npz"], capsys)
    assert (code, err) == (3, f"error: source camera:7: {NO_CAMERA}\n")
    assert not (tmp_path / "scene.npz").exists()


def test_a_service_run_retries_a_missing_camera_warns_once_and_counts(caplog):
    from edge_fakes import ColourRecognizer, FlakySource
    from shelfsight.backoff import BackoffOptions
    from shelfsight.edge.pipeline.health import Health
    from shelfsight.edge.pipeline.runner import RunOptions, run

    source = FlakySource(["refuse"] * 30 + [["frame"] * 10])  # 30 failed opens, then the camera is back
    health, stop = Health(), threading.Event()
    options = RunOptions(backoff=BackoffOptions(initial_s=0.005, max_s=0.01), max_frames=3, drop_frames=False)
    timer = threading.Timer(10.0, stop.set)  # a safety net only
    timer.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="shelfsight.edge.pipeline.capture"):
            summary = run(source, ColourRecognizer(), [], options, health=health, stop=stop, handle_signals=False)
    finally:
        timer.cancel()
    assert summary.stopped_by == "max_frames" and summary.frames == 3
    assert summary.reopens == 30 and health.reopens._value.get() == 30
    by_level = {level: [r.getMessage() for r in caplog.records if r.levelno == level]
                for level in (logging.WARNING, logging.INFO, logging.DEBUG)}
    assert by_level[logging.WARNING] == [
        "source flaky unavailable (open failed: flaky: camera busy); retrying with backoff until it is back "
        "(attempts are counted as reopens, logged at debug level)"]
    assert by_level[logging.INFO] == ["source flaky is back after 30 reopen attempts"]
    assert len(by_level[logging.DEBUG]) == 29


def test_source_timeout_is_checked():
    from shelfsight.edge.pipeline.runner import RunOptions

    for bad in (0, -1.0, float("nan"), float("inf"), "10", True):
        with pytest.raises(ConfigError, match=r"source_timeout_s must be a number of seconds > 0 or None, got "):
            RunOptions(source_timeout_s=bad)
    assert RunOptions(source_timeout_s=2).source_timeout_s == 2


# -- --allow-http: refused naming the flag without it, a warning with it ------------------

def test_run_refuses_plain_http_naming_allow_http_and_makes_no_outbox(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SHELFSIGHT_SYNC_TOKEN", "a-long-enough-token")
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), (0, 0, 255), np.uint8))
    code, out, err = run_cli(["run", make_tiny_bundle(tmp_path / "b"), "--source", image, "--outbox",
                              tmp_path / "o.db", "--endpoint", "http://sync.example.com"], capsys)
    assert (code, out) == (2, "")
    assert err == ("error: sync URL 'http://sync.example.com' uses plain http to sync.example.com; "
                   "use https (or --allow-http, which sends the device token in clear)\n")
    assert not (tmp_path / "o.db").exists()


def test_allow_http_warns_that_the_token_travels_in_clear(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setenv("SHELFSIGHT_SYNC_TOKEN", "a-long-enough-token")
    with caplog.at_level(logging.WARNING):
        code, out, err = run_cli(["sync", "--once", "--endpoint", "http://sync.example.com", "--allow-http",
                                  "--outbox", tmp_path / "o.db"], capsys)  # nothing waits: nothing is sent
    assert (code, out) == (0, "outbox: 0 sent, 0 waiting, dropped 0\n")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("shelfsight.edge.sync.http",
         "sync URL http://sync.example.com is plain http (--allow-http): the device token travels in clear")]


# -- what the fuzz test found: deep, non-finite and multi-line manifests ------------------

def rewrite_manifest(root, text):
    (root / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)
    return root


def test_a_manifest_nested_too_deeply_is_refused_in_one_line(tmp_path):
    from shelfsight.edge.sync.updates import _parse_manifest

    deep = b"[" * 200_000 + b"]" * 200_000
    root = rewrite_manifest(make_tiny_bundle(tmp_path / "b"), deep)
    with pytest.raises(BundleError, match=r"manifest\.json: nested too deeply to be a manifest$"):
        load_bundle(root)
    with pytest.raises(Exception, match=r"^offered manifest is nested too deeply$") as refused:
        _parse_manifest(deep, 10**9)
    assert refused.value.status == "refused"


@pytest.mark.parametrize("section, value, path, shown", [
    ("thresholds", {"unknown_score": float("inf")}, r"\$\.thresholds\.unknown_score", "inf"),
    ("thresholds", {"unknown_similarity": float("nan")}, r"\$\.thresholds\.unknown_similarity", "nan"),
    ("metrics", {"accuracy": [0.5, float("-inf")]}, r"\$\.metrics\.accuracy\[1\]", "-inf"),
])
def test_non_finite_numbers_in_a_manifest_are_refused(tmp_path, section, value, path, shown):
    root = make_tiny_bundle(tmp_path / "b")
    manifest = json.loads((root / "manifest.json").read_text())
    rewrite_manifest(root, json.dumps({**manifest, section: value}))  # Python writes NaN / Infinity
    with pytest.raises(BundleError, match=rf"manifest\.json: {path}: {shown} is not a finite number$"):
        load_bundle(root)


def test_a_file_name_with_a_newline_is_reported_on_one_line(tmp_path):
    root = make_tiny_bundle(tmp_path / "b")
    manifest = json.loads((root / "manifest.json").read_text())
    rewrite_manifest(root, json.dumps({**manifest, "files": {**manifest["files"], "a\nb": ""}}))
    with pytest.raises(BundleError) as refused:
        load_bundle(root)
    assert str(refused.value).endswith("manifest.json: $.files['a\\nb']: '' is not of type 'object'")
    assert "\n" not in str(refused.value)
