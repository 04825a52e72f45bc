"""Regenerate the README's benchmark tables from `shelfsight bench` reports.

    python -m shelfsight.tools.bench.results_table out/bench.json [more.json ...] [--readme README.md]

Prints two Markdown tables: shelfsight's own figures (one row per target, mode and thread
count) and the side-by-side ratios. With ``--readme``, the text between the lines
``<!-- bench-results:start -->`` and ``<!-- bench-results:end -->`` of that file is
replaced instead (atomically; the markers stay).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shelfsight.atomic import write_text
from shelfsight.errors import ConfigError

from .runner import SCHEMA, SCHEMA_VERSION

START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
MB = 1e6


def load_report(path: str | Path) -> dict[str, Any]:
    """A bench report, checked for its schema.

    Raises:
        ConfigError: unreadable, not JSON, or another schema or version.
    """
    p = Path(path)
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a readable JSON report ({e})") from None
    found = (report.get("schema"), report.get("schema_version")) if isinstance(report, dict) else (None, None)
    if found != (SCHEMA, SCHEMA_VERSION):
        raise ConfigError(f"{p}: schema {found[0]!r} version {found[1]!r}, "
                          f"expected {SCHEMA!r} version {SCHEMA_VERSION}")
    return report


def device_name(device: dict[str, Any]) -> str:
    return f"{device.get('cpu_model') or 'unknown CPU'}, {device.get('cores_logical')} cores, {device.get('arch')}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def own_table(reports: list[dict[str, Any]]) -> list[str]:
    rows = ["| model | quant | device | model MB | gzip MB | mode | threads | p50 ms | p90 ms | p99 ms | fps | "
            "peak RSS MB | top-1 | top-5 |", "|" + " --- |" * 14]
    for report in reports:
        device = device_name(report["device"])
        for t in report["targets"]:
            acc = t.get("accuracy") or {}
            for r in t["runs"]:
                if r["backend"] != "shelfsight":
                    continue
                lat = r["latency"]
                rows.append(f"| {t['name']} | {t['quantization']} | {device} | {t['sizes']['model_bytes'] / MB:.2f} | "
                            f"{t['sizes']['model_gzip_bytes'] / MB:.2f} | {r['mode']} | {r['threads']} | "
                            f"{lat['p50_ms']:.2f} | {lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} | "
                            f"{lat['throughput_fps']:.1f} | {r['rss']['peak_mb']:.0f} | {_pct(acc.get('top1'))} | "
                            f"{_pct(acc.get('top5'))} |")
    return rows


def ratio_table(reports: list[dict[str, Any]]) -> list[str]:
    rows = ["| model | device | peer | peer threads | against shelfsight | peer p50 ms | p50 ratio | mean ratio |",
            "|" + " --- |" * 8]
    for report in reports:
        device = device_name(report["device"])
        for t in report["targets"]:
            p50 = {(r["backend"], r["mode"], r["threads"]): r["latency"]["p50_ms"] for r in t["runs"]}
            for q in t.get("ratios", []):
                a = q["against"]
                rows.append(f"| {t['name']} | {device} | {q['backend']} {q['mode']} | "
                            f"{'default' if q['threads'] is None else q['threads']} | {a['mode']}, {a['threads']} "
                            f"thread(s) | {p50[(q['backend'], q['mode'], q['threads'])]:.2f} | "
                            f"{q['p50_ratio']:.2f}x | {q['mean_ratio']:.2f}x |")
    return rows


def results_markdown(reports: list[dict[str, Any]]) -> str:
    """Both tables as one Markdown block."""
    lines = ["Latency per call on the device named (shelfsight's runtime, each model in its own process):", "",
             *own_table(reports)]
    ratios = ratio_table(reports)
    if len(ratios) > 2:
        lines += ["", "Side by side on the same model and inputs (ratio = peer / shelfsight; above 1 = shelfsight "
                  "faster):", "", *ratios]
    return "\n".join(lines) + "\n"


def replace_section(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``.

    Raises:
        ConfigError: the markers are missing, repeated or out of order.
    """
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ConfigError(f"expected one {START} line followed by one {END} line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench.json files")
    parser.add_argument("--readme", type=Path, help="rewrite the marked section of this file in place")
    args = parser.parse_args(argv)
    try:
        block = results_markdown([load_report(p) for p in args.reports])
        if args.readme is None:
            sys.stdout.write(block)
            return 0
        try:
            text = args.readme.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{args.readme}: {e.strerror or e}") from None
        new = replace_section(text, block)
        write_text(args.readme, new)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
