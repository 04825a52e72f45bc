"""`shelfsight bench`: statistics, fingerprint, options, skipped peers (fast), and real reports
on a tiny generated bundle (slow: TensorFlow builds the model, workers run in subprocesses)."""
from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shelfsight.errors import ConfigError
from shelfsight.tools.bench import backends as bench_backends, compare as bench_compare
from shelfsight.tools.bench.options import BenchOptions, default_threads, parse_threads
from shelfsight.tools.bench.runner import (SCHEMA, SCHEMA_VERSION, SLICE_REWARM, Bench, merge_slices, ratios, run_bench,
                                           write_outputs)
from shelfsight.tools.bench.device import cpu_model, device_fingerprint, thermal_zones
from shelfsight.tools.bench.report import text_report
from shelfsight.timing import TimingOptions, time_calls
from shelfsight.tools.bench.stats import latency_stats
from shelfsight.tools.bench.targets import BenchTarget, open_bench_target, synthetic_inputs, variant_paths
from shelfsight.tools.bench.results_table import END, START, load_report, replace_section, results_markdown

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "grocery-sample"
SIZE = 32

TOP_KEYS = {"schema", "schema_version", "created_at", "device", "options", "targets"}
TARGET_KEYS = {"name", "path", "kind", "model_file", "quantization", "input", "scores_size", "sizes", "runs",
               "ratios", "mediapipe_target", "conversions", "accuracy", "search", "skipped"}
RUN_KEYS = {"backend", "version", "mode", "threads", "threads_note", "model_file", "rounds", "import_s", "load_s",
            "first_ms", "warmup", "latency", "rss", "cpu_per_wall", "top1_agreement", "times_ms"}
LATENCY_KEYS = {"runs", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "outliers",
                "outlier_fence_ms", "throughput_fps"}
DEVICE_KEYS = {"cpu_model", "cores_logical", "cores_physical", "arch", "os", "kernel", "memory_bytes", "python",
               "python_implementation", "numpy", "opencv", "shelfsight", "runtime", "cpu_governor",
               "cpu_mhz_current", "cpu_mhz_max", "temperatures_c", "load_average", "load_average_end"}


# ---- statistics -----------------------------------------------------------------------

def test_percentiles_of_one_to_hundred_ms():
    stats = latency_stats(np.arange(1, 101) / 1000.0)
    assert stats.runs == 100
    assert stats.p50_ms == pytest.approx(50.5, abs=1e-9)
    assert stats.p90_ms == pytest.approx(90.1, abs=1e-9)
    assert stats.p99_ms == pytest.approx(99.01, abs=1e-9)
    assert stats.mean_ms == pytest.approx(50.5, abs=1e-9)
    assert stats.std_ms == pytest.approx(29.011491975882016, abs=1e-9)
    assert (stats.min_ms, stats.max_ms, stats.outliers) == (pytest.approx(1.0), pytest.approx(100.0), 0)
    assert stats.throughput_fps == pytest.approx(100 / 5.05, rel=1e-12)


def test_outliers_are_counted_and_kept_in_the_distribution():
    stats = latency_stats([0.010] * 20 + [0.100])
    assert stats.outliers == 1
    assert stats.outlier_fence_ms == pytest.approx(10.0)
    assert stats.mean_ms == pytest.approx(300 / 21)
    assert stats.max_ms == pytest.approx(100.0)
    assert stats.p50_ms == pytest.approx(10.0)


@pytest.mark.parametrize("values, message", [([], "got 0 values"), ([0.1, -0.01], "non-negative"),
                                             ([float("nan")], "finite")])
def test_bad_timings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        latency_stats(values)


def test_time_calls_counts_first_warmup_and_timed_calls_cycling_inputs():
    seen = []
    timed = time_calls(seen.append, ["a", "b", "c"], TimingOptions(min_time=0.0, warmup=3, min_runs=5))
    assert seen == ["a", "b", "c", "a", "a", "b", "c", "a", "b"]
    assert len(timed.warmup) == 3 and len(timed.times) == 5 and timed.first >= 0


def test_time_calls_runs_for_the_minimum_time():
    timed = time_calls(lambda _: None, [0], TimingOptions(min_time=0.05, warmup=0, min_runs=1))
    assert len(timed.times) > 1


@pytest.mark.parametrize("kwargs, message", [({"min_time": -1}, "min_time -1"), ({"warmup": -2}, "warmup -2"),
                                             ({"min_runs": 0}, "min_runs 0"),
                                             ({"min_time": float("inf")}, "min_time inf")])
def test_timing_options_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TimingOptions(**kwargs)


# ---- options --------------------------------------------------------------------------

def test_thread_lists():
    assert default_threads(1) == (1,)
    assert default_threads(2) == (1, 2)
    assert default_threads(6) == (1, 2, 4, 6)
    assert default_threads(8) == (1, 2, 4, 8)
    assert parse_threads("4, 1,2,2") == (1, 2, 4)
    with pytest.raises(ConfigError, match="'1,x'.*comma list"):
        parse_threads("1,x")
    with pytest.raises(ConfigError, match="must be >= 1"):
        parse_threads("0,2")


def test_compare_names_and_options():
    assert bench_compare.parse_compare("MediaPipe, onnxruntime,mediapipe") == ("mediapipe", "onnxruntime")
    with pytest.raises(ConfigError, match="unknown coreml; expected any of mediapipe, onnxruntime, tflite"):
        bench_compare.parse_compare("coreml")
    with pytest.raises(ConfigError, match="runtime 'tpu' unknown"):
        BenchOptions(runtime="tpu")
    with pytest.raises(ConfigError, match="input count 0"):
        BenchOptions(input_count=0)


# ---- device fingerprint ---------------------------------------------------------------

def test_cpu_model_on_x86_and_on_a_raspberry_pi():
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\nmodel name\t: AMD EPYC 7B13\n"
    assert cpu_model(x86, device_tree_model="") == "AMD EPYC 7B13"
    pi = "processor\t: 0\nBogoMIPS\t: 108.00\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model(pi, device_tree_model="Raspberry Pi 4 Model B Rev 1.4") == \
        "Raspberry Pi 4 Model B Rev 1.4 (BCM2835)"


def test_thermal_zones_read_from_sysfs(tmp_path):
    for i, (kind, milli) in enumerate([("cpu-thermal", "51234"), ("gpu-thermal", "oops")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    assert thermal_zones(tmp_path) == {"cpu-thermal": 51.234}
    assert thermal_zones(tmp_path / "absent") == {}


def test_fingerprint_has_every_field():
    device = device_fingerprint()
    assert DEVICE_KEYS - {"load_average_end"} == set(device)
    assert device["runtime"]["name"] == "litert" and device["cores_logical"] == os.cpu_count()


# ---- peers that are not there ---------------------------------------------------------

def _dummy_target(tmp_path: Path) -> BenchTarget:
    return BenchTarget("dummy", tmp_path / "m.tflite", "tflite", tmp_path / "m.tflite", None, "unknown", (SIZE, SIZE),
                  "uint8", 3)


def test_absent_tensorflow_skips_tflite_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(bench_backends.MODULES, "tflite", ("shelfsight_no_such_module", "tensorflow"))
    lines, skipped = [], []
    jobs = Bench(BenchOptions(), tmp_path, tmp_path, lines.append)._peer_tflite(_dummy_target(tmp_path),
                                                                               tmp_path / "x.npy", skipped, {})
    assert jobs == []
    assert [s.to_dict() for s in skipped] == [{"backend": "tflite", "threads": None, "reason":
                                               f"shelfsight_no_such_module is not installed in {sys.executable} "
                                               f"(pip install tensorflow)"}]
    assert lines == [f"[dummy] tflite skipped: {skipped[0].reason}"]


def test_absent_mediapipe_and_peer_env_skip_mediapipe(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_compare, "_importable", lambda module: False)
    monkeypatch.setenv(bench_compare.PEERS_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    skipped = []
    jobs = Bench(BenchOptions(), tmp_path, tmp_path, lambda _: None)._peer_mediapipe(_dummy_target(tmp_path),
                                                                                    tmp_path / "x.npy", skipped, {})
    assert jobs == [] and len(skipped) == 1
    assert skipped[0].reason == (f"mediapipe is not installed here and there is no peer environment at "
                                 f"{tmp_path / 'nowhere' / 'python'} (bash tools/peers/setup_env.sh)")


def test_absent_converter_skips_onnxruntime(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_compare, "_importable", lambda module: module == "onnxruntime")
    source, why = bench_compare.onnx_source(tmp_path / "m.tflite")
    assert source is None
    assert why == "no m.onnx beside m.tflite, and converting needs tf2onnx and TensorFlow (pip install tf2onnx)"
    (tmp_path / "m.onnx").write_bytes(b"user's own")
    assert bench_compare.onnx_source(tmp_path / "m.tflite") == (tmp_path / "m.onnx", "")


def test_worker_failure_comes_back_as_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, SIZE, SIZE, 3), np.uint8))
    request = {"backend": "onnxruntime", "model": str(tmp_path / "absent.onnx"), "inputs": str(tmp_path / "x.npy"),
               "threads": 1, "scores_size": 3}
    worker = bench_compare.WorkerProcess(bench_compare.worker_command(), request, timeout=120)
    assert worker.hello["ok"] is False
    assert "absent.onnx: onnxruntime cannot load it" in worker.hello["error"]
    assert worker.ask({"cmd": "time"})["error"].startswith("worker is not running")
    assert worker.close() == {"ok": False, "error": "already closed"}


def test_slices_pool_timings_in_order():
    hello = {"ok": True, "backend": "shelfsight", "version": "litert 2.1.0", "import_s": 0.1, "load_s": 0.2}
    slices = [{"first_ms": 5.0, "warmup_ms": [1.0, 1.0], "times_s": [0.01, 0.02], "cpu_per_wall": 1.0},
              {"first_ms": 3.0, "warmup_ms": [2.0], "times_s": [0.03], "cpu_per_wall": 0.5}]
    merged = merge_slices(hello, slices, [0, 1], {"baseline_bytes": 100, "peak_bytes": 700})
    assert merged == {**hello, "rounds": 2, "first_ms": 5.0, "warmup_ms": [1.0, 1.0], "times_s": [0.01, 0.02, 0.03],
                      "cpu_per_wall": 0.75, "top1": [0, 1], "rss": {"baseline_bytes": 100, "peak_bytes": 700}}


def test_rounds_share_the_time_budget(tmp_path):
    bench = Bench(replace(BenchOptions(timing=TimingOptions(min_time=3.0, warmup=4, min_runs=10)), rounds=4),
                  tmp_path, tmp_path, lambda _: None)
    assert bench.slice_message(0) == {"cmd": "time", "min_time": 0.75, "min_runs": 3, "warmup": 4}
    assert bench.slice_message(1) == {"cmd": "time", "min_time": 0.75, "min_runs": 3, "warmup": SLICE_REWARM}
    with pytest.raises(ConfigError, match="rounds 0 must be >= 1"):
        BenchOptions(rounds=0)


def test_worker_peak_memory_does_not_include_the_parents_size_at_fork():
    import psutil

    ballast = np.ones(320 * 2**20, np.uint8)  # 320 MiB resident in this (parent) process
    parent = psutil.Process().memory_info().rss
    out = subprocess.run([sys.executable, "-c", "from shelfsight.tools.bench.worker import peak_rss_bytes; "
                          "print(peak_rss_bytes())"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-1000:]
    assert int(out.stdout) < parent - 200 * 2**20, (int(out.stdout), parent)
    del ballast


# ---- ratios and targets ---------------------------------------------------------------

def _run(backend: str, mode: str, threads, p50: float) -> dict:
    return {"backend": backend, "mode": mode, "threads": threads, "latency": {"p50_ms": p50, "mean_ms": p50 * 1.1}}


def test_ratios_pair_runs_at_equal_threads_and_check_the_mediapipe_target():
    runs = [_run("shelfsight", "invoke", 1, 10.0), _run("shelfsight", "frame", 1, 11.0),
            _run("shelfsight", "invoke", 2, 6.0), _run("onnxruntime", "invoke", 2, 9.0),
            _run("mediapipe", "classify", None, 12.0)]
    out, goal = ratios(runs)
    assert [(r["backend"], r["against"]["mode"], r["against"]["threads"], round(r["p50_ratio"], 4)) for r in out] == [
        ("onnxruntime", "invoke", 2, 1.5), ("mediapipe", "frame", 1, round(12 / 11, 4)),
        ("mediapipe", "invoke", 1, 1.2)]
    assert goal == {"rule": "shelfsight frame p50 <= MediaPipe classify p50 (1 thread)", "shelfsight_p50_ms": 11.0,
                    "mediapipe_p50_ms": 12.0, "met": True}


def test_targets_that_are_not_models(tmp_path):
    with pytest.raises(ConfigError, match="target .*absent not found"):
        open_bench_target(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="expected a bundle directory .* or a .tflite file"):
        open_bench_target(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="no bundle in it"):
        variant_paths(tmp_path)


def test_synthetic_inputs_are_fixed():
    a, b = synthetic_inputs((SIZE, 48), 3), synthetic_inputs((SIZE, 48), 3)
    assert a.shape == (3, SIZE, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a[0], a[1])


def test_readme_section_is_replaced_between_markers():
    text = f"# x\n\n{START}\nold\n{END}\ntail\n"
    assert replace_section(text, "new\n") == f"# x\n\n{START}\nnew\n{END}\ntail\n"
    with pytest.raises(ConfigError, match="expected one"):
        replace_section("# no markers\n", "new\n")


def test_results_table_refuses_other_json(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"schema": "shelfsight.eval"}))
    with pytest.raises(ConfigError, match="schema 'shelfsight.eval' version None, expected 'shelfsight.bench'"):
        load_report(tmp_path / "r.json")


# ---- real reports on a tiny bundle (slow) ---------------------------------------------

def _labels() -> list[str]:
    with (SAMPLE / "classes.csv").open(newline="") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A 32 px two-output tf_keras model, int8 with uint8 input, as a bundle of the sample's 12 labels."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    from shelfsight.bundle import new_manifest, write_manifest
    from shelfsight.export.convert import to_tflite
    from shelfsight.export.options import QuantizationConfig
    from shelfsight.preprocess import PreprocessSpec
    from shelfsight.training.tf_env import keras

    labels = _labels()
    keras.utils.set_random_seed(3)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(len(labels), activation="softmax", name="scores")(x)
    embedding = keras.layers.UnitNormalization(name="embedding")(keras.layers.Dense(8)(x))
    model = keras.Model(image, {"scores": scores, "embedding": embedding})
    calibration = np.random.default_rng(0).integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    root = tmp_path_factory.mktemp("bench") / "tiny-int8"
    root.mkdir()
    (root / "model.tflite").write_bytes(to_tflite(model, QuantizationConfig.for_int8(8), calibration))
    (root / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    write_manifest(root, new_manifest(
        model={"file": "model.tflite", "format": "tflite", "quantization": "int8"},
        labels={"file": "labels.txt", "count": len(labels)}, preprocess=PreprocessSpec(size=SIZE).to_dict(),
        thresholds={"unknown_score": 0.0}, index=None, metrics={}, provenance={}))
    return root


QUICK = BenchOptions(threads=(1,), timing=TimingOptions(min_time=0.05, warmup=1, min_runs=3), input_count=2,
                     rounds=1)


def _check_schema(report: dict) -> None:
    assert set(report) == TOP_KEYS
    assert (report["schema"], report["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert set(report["device"]) == DEVICE_KEYS
    for target in report["targets"]:
        assert set(target) == TARGET_KEYS
        for run in target["runs"]:
            assert set(run) == RUN_KEYS
            assert set(run["latency"]) == LATENCY_KEYS
            assert run["latency"]["runs"] == len(run["times_ms"]) >= 2
            # the summary is of the times listed beside it (those are rounded to 0.1 microseconds)
            again = latency_stats(np.asarray(run["times_ms"]) / 1e3)
            for key in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms"):
                assert run["latency"][key] == pytest.approx(getattr(again, key), abs=1e-4), key


def _accuracy_by_hand(bundle: Path) -> tuple[float, float, dict[int, float]]:
    """Top-1, top-5 and label hit rate at 1 and 5 of the catalog search on the sample's val
    split, image by image through the Recognizer (not the bench's batch path)."""
    from shelfsight.datasets import load_dataset
    from shelfsight.edge.catalog.search import CatalogIndex
    from shelfsight.edge.runtime.recognizer import Recognizer
    from shelfsight.images import read_image

    samples = load_dataset(SAMPLE, "val").samples
    with Recognizer.create_from_bundle(bundle, top_k=5, search_k=0) as rec:
        frames = [read_image(s.path) for s in samples]
        ranked = [[p.label for p in rec.classify(f).predictions] for f in frames]
        embeddings = np.stack([rec.embed(f) for f in frames])
        with CatalogIndex.load(bundle, rec.bundle.model_sha256) as index:
            found = [[m.label for m in r] for r in index.search_batch(embeddings, k=5)]
    truth = [s.label for s in samples]
    top1 = float(np.mean([r[0] == t for r, t in zip(ranked, truth)]))
    top5 = float(np.mean([t in r for r, t in zip(ranked, truth)]))
    recall = {k: float(np.mean([t in f[:k] for f, t in zip(found, truth)])) for k in (1, 5)}
    return top1, top5, recall


@pytest.mark.slow
def test_report_on_a_tiny_bundle_with_accuracy_and_search(tiny_bundle, tmp_path):
    from shelfsight.edge.indexing import build_index

    bundle = tmp_path / "tiny-int8"
    shutil.copytree(tiny_bundle, bundle)
    # without fusion the frame path must name exactly what invoke names (same pixels, same model);
    # with it the index votes too and the two may differ by design
    build_index(bundle, SAMPLE, backend="exact", progress=False, fusion=False)
    report = run_bench([open_bench_target(bundle)], replace(QUICK, data=SAMPLE, rounds=2))
    _check_schema(report)
    json.dumps(report, allow_nan=False)
    target = report["targets"][0]
    assert [(r["backend"], r["mode"], r["threads"]) for r in target["runs"]] == [
        ("shelfsight", "invoke", 1), ("shelfsight", "frame", 1)]
    assert target["runs"][1]["top1_agreement"] == 1.0
    assert [r["rounds"] for r in target["runs"]] == [2, 2]
    assert target["input"] == {"size": [SIZE, SIZE], "dtype": "uint8"}
    assert target["sizes"]["model_bytes"] == (bundle / "model.tflite").stat().st_size
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert target["sizes"]["bundle_bytes"] == sum((bundle / name).stat().st_size for name in manifest["files"])
    assert target["sizes"]["model_gzip_bytes"] == len(gzip.compress((bundle / "model.tflite").read_bytes(), 9, mtime=0))
    assert target["accuracy"]["samples"] == len((SAMPLE / "val.txt").read_text().splitlines())
    top1, top5, recall = _accuracy_by_hand(bundle)
    assert (target["accuracy"]["top1"], target["accuracy"]["top5"]) == (pytest.approx(top1, abs=1e-12),
                                                                        pytest.approx(top5, abs=1e-12))
    search = target["search"]
    assert search["queries"] == target["accuracy"]["samples"]
    assert search["recall_at_k"] == {"1": pytest.approx(recall[1], abs=1e-12), "5": pytest.approx(recall[5], abs=1e-12)}
    assert report["options"]["rounds"] == 2
    assert report["options"]["inputs"] == {"source": "data", "data": str(SAMPLE), "split": "val", "count": 2}
    written = write_outputs(report, tmp_path / "out")
    assert {p.name for p in written.values()} == {"bench.json", "latency.png", "accuracy.png", "report.md"}
    assert "![Latency distribution](latency.png)" in written["markdown"].read_text()
    assert text_report(report).startswith("device: ")
    table = results_markdown([load_report(written["json"])])
    assert "| tiny-int8 | int8 |" in table and "| invoke | 1 |" in table


@pytest.mark.slow
def test_compare_runs_every_peer_or_says_why_not(tiny_bundle):
    report = run_bench([open_bench_target(tiny_bundle / "model.tflite")],
                       replace(QUICK, compare=("mediapipe", "onnxruntime", "tflite")))
    _check_schema(report)
    target = report["targets"][0]
    measured = {r["backend"] for r in target["runs"]}
    skipped = {s["backend"] for s in target["skipped"]}
    assert measured | skipped == {"shelfsight", "mediapipe", "onnxruntime", "tflite"}
    assert {"onnxruntime", "tflite"} <= measured  # both installed in the project's environment
    for run in target["runs"]:
        if run["backend"] != "shelfsight":
            assert run["top1_agreement"] == 1.0, run["backend"]
    conv = target["conversions"]["onnx"]
    assert conv["ok"] and conv["source"] == "tf2onnx" and conv["top1_agreement"] == 1.0
    assert {(r["backend"], r["against"]["mode"]) for r in target["ratios"]} >= {("onnxruntime", "invoke"),
                                                                              ("tflite", "invoke")}


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tf2onnx") or name.startswith(
                ("shelfsight.training", "shelfsight.export")):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow
def test_bench_command_and_worker_run_with_tensorflow_blocked(tiny_bundle, tmp_path):
    script = BLOCKER + """
import json, sys
from shelfsight.app.cli import main
from shelfsight.tools.bench.worker import measure
try:
    main(sys.argv[1:-1])
except SystemExit as e:
    assert not e.code, e.code
result = measure(json.loads(open(sys.argv[-1]).read()))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
print(json.dumps({"heavy": heavy, "ok": result["ok"]}))
"""
    np.save(tmp_path / "x.npy", synthetic_inputs((SIZE, SIZE), 2))
    request = {"backend": "shelfsight", "model": str(tiny_bundle / "model.tflite"), "inputs": str(tmp_path / "x.npy"),
               "threads": 1, "mode": "frame", "bundle": str(tiny_bundle), "min_time": 0, "warmup": 0, "min_runs": 2}
    (tmp_path / "req.json").write_text(json.dumps(request))
    args = ["bench", str(tiny_bundle), "--threads", "1", "--min-time", "0", "--warmup", "0", "--min-runs", "3",
            "--rounds", "1", "--inputs", "2", "--out", str(tmp_path / "out")]
    out = subprocess.run([sys.executable, "-c", script, *args, str(tmp_path / "req.json")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"heavy": [], "ok": True}
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [r["mode"] for r in report["targets"][0]["runs"]] == ["invoke", "frame"]


@pytest.mark.slow
def test_cli_prints_json_and_user_errors_in_one_line(tiny_bundle, tmp_path):
    from shelfsight.app.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(tiny_bundle), "--threads", "1", "--min-time", "0", "--warmup", "0",
                                 "--min-runs", "3", "--rounds", "1", "--inputs", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    _check_schema(report)
    assert report["options"]["threads"] == [1]
    out = subprocess.run([sys.executable, "-m", "shelfsight", "bench", str(tmp_path / "absent")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: target {tmp_path / 'absent'} not found"
