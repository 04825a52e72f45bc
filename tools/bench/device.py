"""The device fingerprint that opens every benchmark report.

What is readable without root and without TensorFlow: CPU model (x86 ``model name``,
ARM ``Hardware``/``Model`` or the device tree's model, e.g. "Raspberry Pi 4 Model B"),
logical and physical cores, architecture, OS and kernel, memory, Python, numpy and
OpenCV, the TFLite runtime shelfsight would use, and from /sys the CPU frequency
governor, current/max frequency and thermal zone temperatures where they exist.
A value that cannot be read is null, never guessed.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CPUINFO = Path("/proc/cpuinfo")
DEVICE_TREE_MODEL = Path("/sys/firmware/devicetree/base/model")
CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")
THERMAL = Path("/sys/class/thermal")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def cpu_model(cpuinfo: str | None = None, device_tree_model: str | None = None) -> str | None:
    """The CPU (or board) name from /proc/cpuinfo text and the device tree model."""
    text = cpuinfo if cpuinfo is not None else (_read(CPUINFO) or "")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    board = device_tree_model if device_tree_model is not None else _read(DEVICE_TREE_MODEL)
    cpu = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or fields.get("processor")
    if cpu and cpu.isdigit():  # ARM lists "processor : 0"
        cpu = None
    listed = fields.get("model")  # x86 lists a model number here, some ARM boards a name
    model = board or (listed if listed and not listed.isdigit() else None)
    if cpu and model and model not in cpu:
        return f"{model} ({cpu})"
    return model or cpu or platform.processor() or None


def thermal_zones(root: Path = THERMAL) -> dict[str, float]:
    """Thermal zone type -> degrees Celsius, for the zones whose temperature is readable."""
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")) if root.is_dir() else ():
        raw = _read(zone / "temp")
        if raw is None or not raw.lstrip("-").isdigit():
            continue
        name = _read(zone / "type") or zone.name
        out[name if name not in out else f"{name}:{zone.name}"] = int(raw) / 1000.0
    return out


def _khz_to_mhz(raw: str | None) -> float | None:
    return int(raw) / 1000.0 if raw and raw.isdigit() else None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_fingerprint(runtime: str = "auto") -> dict[str, Any]:
    """Everything that tells two devices (or two states of one device) apart.

    Args:
        runtime: the TFLite runtime the benchmark uses ("auto" = the one shelfsight picks).
    """
    from shelfsight.edge.runtime.interpreter import load_runtime
    from shelfsight.errors import RuntimeUnavailableError

    try:
        rt = load_runtime(runtime)
        runtime_info = {"name": rt.name, "version": rt.version}
    except RuntimeUnavailableError as e:
        runtime_info = {"name": None, "version": None, "error": str(e)}
    uname = platform.uname()
    return {
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": _physical_cores(),
        "arch": uname.machine,
        "os": platform.platform(),
        "kernel": uname.release,
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "opencv": _version("opencv-python") or _version("opencv-python-headless"),
        "shelfsight": _version("shelfsight"),
        "runtime": runtime_info,
        "cpu_governor": _read(CPUFREQ / "scaling_governor"),
        "cpu_mhz_current": _khz_to_mhz(_read(CPUFREQ / "scaling_cur_freq")),
        "cpu_mhz_max": _khz_to_mhz(_read(CPUFREQ / "cpuinfo_max_freq")),
        "temperatures_c": thermal_zones(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
