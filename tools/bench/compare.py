"""Where the peer runtimes of `shelfsight bench --compare` come from, and how each is started.

The one place that decides, per backend, whether it can run here and with what:

- ``onnxruntime``: onnxruntime importable in this Python, and an ONNX file: the user's
  (``MODEL.onnx`` beside ``MODEL.tflite``) or one converted by `bench_onnx` (needs tf2onnx
  and TensorFlow, run in a subprocess).
- ``tflite``: TensorFlow importable in this Python (its ``tf.lite.Interpreter``).
- ``mediapipe``: mediapipe importable in this Python, else the peer environment
  (``$SHELFSIGHT_PEERS_PYTHON`` or ``<repo>/.venv-peers``, see tools/peers/setup_env.sh).

A backend that cannot run is skipped with a one-line reason; nothing is substituted.
"""
from __future__ import annotations

import importlib.util
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shelfsight.errors import ConfigError

from .backends import module_missing

PEERS = ("mediapipe", "onnxruntime", "tflite")
PEERS_DIR = Path(__file__).resolve().parents[1] / "peers"  # tools/peers; the peer venv sits at the repo root
MEDIAPIPE_SCRIPT = PEERS_DIR / "mediapipe_bench.py"
PEERS_PYTHON_ENV = "SHELFSIGHT_PEERS_PYTHON"
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Skip:
    """A backend that was not measured, and why (one line)."""

    backend: str
    reason: str
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "threads": self.threads, "reason": self.reason}


def parse_compare(text: str | None) -> tuple[str, ...]:
    """"mediapipe,onnxruntime" -> ("mediapipe", "onnxruntime").

    Raises:
        ConfigError: an unknown backend name.
    """
    names = tuple(dict.fromkeys(n.strip().lower() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ConfigError(f"--compare {text!r}: unknown {', '.join(unknown)}; expected any of {', '.join(PEERS)}")
    return names


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def peers_python() -> Path | None:
    """The peer environment's interpreter, if there is one."""
    configured = os.environ.get(PEERS_PYTHON_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    default = PEERS_DIR.parents[1] / ".venv-peers" / "bin" / "python"
    return default if default.is_file() else None


def mediapipe_python() -> tuple[Path | None, str]:
    """(interpreter that has mediapipe, "") or (None, why not)."""
    if _importable("mediapipe"):
        return Path(sys.executable), ""
    peer = peers_python()
    if peer is not None:
        return peer, ""
    where = os.environ.get(PEERS_PYTHON_ENV) or str(PEERS_DIR.parents[1] / ".venv-peers")
    return None, (f"mediapipe is not installed here and there is no peer environment at {where} "
                  f"(bash tools/peers/setup_env.sh)")


def onnx_source(model: Path) -> tuple[Path | None, str]:
    """(the user's ONNX file beside the model, "") or (None, "convert") or (None, why not)."""
    missing = module_missing("onnxruntime")
    if missing:
        return None, missing
    own = model.with_suffix(".onnx")
    if own.is_file():
        return own, ""
    if not (_importable("tf2onnx") and _importable("tensorflow")):
        return None, (f"no {own.name} beside {model.name}, and converting needs tf2onnx and TensorFlow "
                      f"(pip install tf2onnx)")
    return None, "convert"


def run_json(command: list[str], request: dict[str, Any] | None = None, timeout: float = WORKER_TIMEOUT_S) -> dict:
    """Run a worker process and return the JSON object on the last line of its stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(command, input=json.dumps(request) if request is not None else None,
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    except OSError as e:
        return {"ok": False, "error": f"cannot start {command[0]}: {e.strerror or e}"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"ok": False, "error": f"exit code {proc.returncode}: {tail}"}


class WorkerProcess:
    """A running worker (bench_worker's line protocol): started with its request, then asked.

    Every reply is a dict with ``ok``; a worker that dies, hangs past ``timeout`` or writes
    no JSON gives ``ok`` false and a one-line ``error`` (its last stderr line) instead.
    """

    def __init__(self, command: list[str], request: dict[str, Any], timeout: float = WORKER_TIMEOUT_S):
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        except OSError as e:
            self._proc = None
            self.hello = {"ok": False, "error": f"cannot start {command[0]}: {e.strerror or e}"}
            return
        self.hello = self.ask(request)
        if not self.hello.get("ok"):
            self.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1][:300] if lines else "no output"

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message, return the worker's reply."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return {"ok": False, "error": "worker is not running" + (f" ({self._stderr_tail()})" if proc else "")}
        try:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return {"ok": False, "error": f"worker exited: {self._stderr_tail()}"}
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    proc.kill()
                    return {"ok": False, "error": f"timed out after {self.timeout:.0f} s"}
                line = proc.stdout.readline()
                if not line:
                    proc.wait()
                    return {"ok": False, "error": f"exit code {proc.returncode}: {self._stderr_tail()}"}
                if line.startswith("{"):
                    try:
                        return json.loads(line)
                    except json.JSONDecodeError:
                        continue

    def close(self) -> dict[str, Any]:
        """Ask the worker to finish (its final reply holds ``rss``); safe to call twice."""
        proc, self._proc = self._proc, None
        reply: dict[str, Any] = {"ok": False, "error": "already closed"}
        if proc is not None:
            if proc.poll() is None:
                self._proc = proc
                reply = self.ask({"cmd": "close"})
                self._proc = None
            try:
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._stderr.close()
        return reply


def worker_command() -> list[str]:
    return [sys.executable, "-m", "shelfsight.tools.bench.worker"]


def mediapipe_command(python: Path) -> list[str]:
    if not MEDIAPIPE_SCRIPT.is_file():
        raise ConfigError(f"{MEDIAPIPE_SCRIPT} is missing from this installation")
    return [str(python), str(MEDIAPIPE_SCRIPT)]


def convert_to_onnx(model: Path, out: Path, inputs: Path) -> dict[str, Any]:
    """Convert with `bench_onnx` in a subprocess; its JSON (``ok`` false with ``error`` on failure)."""
    return run_json([sys.executable, "-m", "shelfsight.tools.bench.onnx", str(model), str(out), str(inputs)])
