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
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shelfsight.errors import ConfigError

from .bench_backends import module_missing

PEERS = ("mediapipe", "onnxruntime", "tflite")
PEERS_DIR = Path(__file__).resolve().parent / "peers"
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


def worker_command() -> list[str]:
    return [sys.executable, "-m", "shelfsight.tools.bench_worker"]


def mediapipe_command(python: Path) -> list[str]:
    if not MEDIAPIPE_SCRIPT.is_file():
        raise ConfigError(f"{MEDIAPIPE_SCRIPT} is missing from this installation")
    return [str(python), str(MEDIAPIPE_SCRIPT)]


def convert_to_onnx(model: Path, out: Path, inputs: Path) -> dict[str, Any]:
    """Convert with `bench_onnx` in a subprocess; its JSON (``ok`` false with ``error`` on failure)."""
    return run_json([sys.executable, "-m", "shelfsight.tools.bench_onnx", str(model), str(out), str(inputs)])
