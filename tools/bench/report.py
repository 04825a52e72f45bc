"""Render a benchmark report (the JSON of `shelfsight.tools.bench`) for people.

`text_report` is the terminal table, `markdown_report` the Markdown file, and
`plot_latency` / `plot_accuracy` draw the PNGs the Markdown shows (matplotlib, Agg).
Everything here reads the report dict only, so an old report.json renders again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from shelfsight.lazy import have_optional

MB = 1e6
COLUMNS = ("target", "quant", "backend", "mode", "thr", "load ms", "first ms", "mean", "p50", "p90", "p99", "std",
           "outl", "fps", "RSS MB", "top1 =")


def run_label(target: dict[str, Any], run: dict[str, Any]) -> str:
    threads = "default" if run["threads"] is None else f"{run['threads']}t"
    return f"{target['name']} · {run['backend']} {run['mode']} {threads}"


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _plain(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "n/a"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(_plain(v) for v in value)
    return str(value)


def run_row(target: dict[str, Any], run: dict[str, Any]) -> list[str]:
    lat = run["latency"]
    agreement = run.get("top1_agreement")
    return [target["name"], target["quantization"], run["backend"], run["mode"],
            "-" if run["threads"] is None else str(run["threads"]), _f(run["load_s"] * 1e3, 1),
            _f(run["first_ms"], 1), _f(lat["mean_ms"]), _f(lat["p50_ms"]), _f(lat["p90_ms"]), _f(lat["p99_ms"]),
            _f(lat["std_ms"]), str(lat["outliers"]), _f(lat["throughput_fps"], 1), _f(run["rss"]["peak_mb"], 1),
            "-" if agreement is None else f"{agreement:.0%}"]


def _grid(header: Iterable[str], rows: list[list[str]]) -> list[str]:
    header = list(header)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def device_line(device: dict[str, Any]) -> str:
    rt = device.get("runtime") or {}
    temps = device.get("temperatures_c") or {}
    parts = [device.get("cpu_model") or "unknown CPU",
             f"{device.get('cores_logical')} cores ({device.get('cores_physical') or '?'} physical)",
             device.get("arch"), device.get("os"), f"Python {device.get('python')}",
             f"{rt.get('name')} {rt.get('version')}", f"numpy {device.get('numpy')}",
             f"governor {device.get('cpu_governor') or 'n/a'}",
             "temp " + (", ".join(f"{k} {v:.0f}C" for k, v in temps.items()) if temps else "n/a"),
             "load " + " ".join(str(x) for x in device.get("load_average") or [])]
    return " · ".join(str(p) for p in parts if p)


def size_line(target: dict[str, Any]) -> str:
    s = target["sizes"]
    extra = f", bundle {s['bundle_bytes'] / MB:.2f} MB" if "bundle_bytes" in s else ""
    h, w = target["input"]["size"]
    return (f"{target['name']}: {target['kind']} {target['quantization']}, input {w}x{h} {target['input']['dtype']}, "
            f"model {s['model_bytes'] / MB:.2f} MB (gzip {s['model_gzip_bytes'] / MB:.2f} MB){extra}")


def ratio_lines(target: dict[str, Any]) -> list[str]:
    out = []
    for r in target.get("ratios", []):
        a = r["against"]
        threads = "default threads" if r["threads"] is None else f"{r['threads']} thread(s)"
        out.append(f"{target['name']}: {r['backend']} {r['mode']} ({threads}) / shelfsight {a['mode']} "
                   f"({a['threads']} thread(s)): p50 {r['p50_ratio']:.2f}x, mean {r['mean_ratio']:.2f}x")
    goal = target.get("mediapipe_target")
    if goal:
        out.append(f"{target['name']}: target {goal['rule']}: {goal['shelfsight_p50_ms']:.2f} ms vs "
                   f"{goal['mediapipe_p50_ms']:.2f} ms -> {'met' if goal['met'] else 'NOT met'}")
    return out


def quality_lines(target: dict[str, Any]) -> list[str]:
    out = []
    acc = target.get("accuracy")
    if acc:
        out.append(f"{target['name']}: {acc['split']} top-1 {acc['top1']:.1%}, top-5 {acc['top5']:.1%} "
                   f"({acc['samples']} images, {acc['skipped_images']} unreadable)")
    search = target.get("search")
    if search:
        recall = ", ".join(f"recall@{k} {v:.1%}" for k, v in search["recall_at_k"].items())
        out.append(f"{target['name']}: search {recall} ({search['queries']} queries)")
    conv = (target.get("conversions") or {}).get("onnx")
    if conv and conv.get("ok"):
        out.append(f"{target['name']}: ONNX by tf2onnx {conv['tf2onnx']} (opset {conv['opset']}), "
                   f"max |score diff| {conv['max_abs_diff_scores']:.4f}, top-1 agreement {conv['top1_agreement']:.0%}")
    elif conv and conv.get("source") == "user":
        out.append(f"{target['name']}: ONNX from the user's file {conv['file']}")
    return out


def text_report(report: dict[str, Any]) -> str:
    """The terminal table: device, one row per run, ratios, accuracy and skips."""
    lines = ["device: " + device_line(report["device"]), ""]
    lines += [size_line(t) for t in report["targets"]]
    lines.append("")
    rows = [run_row(t, r) for t in report["targets"] for r in t["runs"]]
    lines += _grid(COLUMNS, rows) if rows else ["(no runs)"]
    lines.append("latency in ms; outl = runs above Q3 + 1.5 IQR (kept); top1 = agreement with shelfsight invoke")
    extra = [line for t in report["targets"] for line in ratio_lines(t)]
    if extra:
        lines += ["", "ratios (peer / shelfsight; above 1 = shelfsight faster):", *extra]
    extra = [line for t in report["targets"] for line in quality_lines(t)]
    if extra:
        lines += ["", *extra]
    skips = [f"{t['name']}: {s['backend']}" + (f" ({s['threads']} thread(s))" if s["threads"] else "") +
             f" skipped: {s['reason']}" for t in report["targets"] for s in t["skipped"]]
    if skips:
        lines += ["", *skips]
    return "\n".join(lines) + "\n"


def _md_table(header: Iterable[str], rows: list[list[str]]) -> list[str]:
    header = list(header)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown_report(report: dict[str, Any], plots: dict[str, str], note: str = "") -> str:
    """The Markdown report; ``plots`` maps a caption to a PNG path relative to the report."""
    device = report["device"]
    lines = ["# shelfsight bench", "", f"Created {report['created_at']} (schema {report['schema']} "
             f"v{report['schema_version']}).", "", "## Device", ""]
    lines += _md_table(["field", "value"], [[k, _plain(v)] for k, v in device.items()])
    opts = report["options"]
    lines += ["", f"Timing: each model loaded in its own process, {opts['warmup']} warm-up calls, then at least "
              f"{opts['min_runs']} runs and {opts['min_time_s']} s per measurement in {opts.get('rounds', 1)} "
              f"interleaved slices; inputs: {opts['inputs']['count']} {opts['inputs']['source']} images.", ""]
    if note:
        lines += [note, ""]
    lines += ["## Models", "", *(f"- {size_line(t)}" for t in report["targets"]), "", "## Latency", ""]
    rows = [run_row(t, r) for t in report["targets"] for r in t["runs"]]
    lines += _md_table(COLUMNS, rows)
    lines += ["", "Latency in ms; outl = runs above Q3 + 1.5 IQR (kept in every figure); "
              "top1 = share of inputs whose top-1 class equals shelfsight invoke's.", ""]
    for title, fn in (("Side by side", ratio_lines), ("Accuracy", quality_lines)):
        extra = [line for t in report["targets"] for line in fn(t)]
        if extra:
            lines += [f"## {title}", "", *(f"- {x}" for x in extra), ""]
    skips = [f"- {t['name']}: {s['backend']} skipped: {s['reason']}" for t in report["targets"] for s in t["skipped"]]
    if skips:
        lines += ["## Skipped", "", *skips, ""]
    for caption, path in plots.items():
        lines += [f"## {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(lines)


def plot_latency(report: dict[str, Any], path: Path) -> Path | None:
    """Box plots of every run's per-call latency (outliers drawn). None without runs or without matplotlib."""
    runs = [(run_label(t, r), r["times_ms"]) for t in report["targets"] for r in t["runs"] if r.get("times_ms")]
    if not runs or not have_optional("matplotlib", "plots", "bench plots"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(runs)))
    ax.boxplot([r[1] for r in runs[::-1]], vert=False, whis=1.5, showmeans=True, flierprops={"markersize": 3})
    ax.set_yticks(range(1, len(runs) + 1), [r[0] for r in runs[::-1]], fontsize=8)
    ax.set_xlabel("latency per call (ms)")
    ax.set_title("Latency distribution (box: quartiles, whiskers: 1.5 IQR, triangle: mean)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(report: dict[str, Any], path: Path) -> Path | None:
    """Top-1 accuracy against gzip size and against shelfsight's p50 latency (fewest threads).
    None when no target has accuracy, or without matplotlib."""
    points = []
    for t in report["targets"]:
        if not t.get("accuracy"):
            continue
        own = [r for r in t["runs"] if r["backend"] == "shelfsight" and r["mode"] == "invoke"]
        p50 = min(own, key=lambda r: r["threads"])["latency"]["p50_ms"] if own else None
        points.append((t["name"], t["sizes"]["model_gzip_bytes"] / MB, p50, t["accuracy"]["top1"] * 100))
    if not points or not have_optional("matplotlib", "plots", "bench plots"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label in ((axes[0], 1, "model size, gzip (MB)"), (axes[1], 2, "p50 latency, fewest threads (ms)")):
        for i, p in enumerate(points):
            if p[column] is not None:  # labels alternate above and below: equal accuracies do not collide
                ax.scatter(p[column], p[3])
                ax.annotate(p[0], (p[column], p[3]), fontsize=8, xytext=(4, 4 if i % 2 == 0 else -11),
                            textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against size and latency", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
