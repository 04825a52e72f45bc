"""Measure the kiosk screen: frame capture -> top-3 on screen latency, and what the UI costs in CPU.

    python -m shelfsight.tools.kiosk_latency BUNDLE --source VIDEO_OR_IMAGE [--seconds 10] [--view-fps 15]
        [--view-width 320] [--chromium /usr/bin/chromium] [--out report.json]

Runs the kiosk in this process on a loopback port with a headless Chromium (Playwright) showing
the page. Latency: each state the page renders carries its frame's capture time; the page notes
when it drew it (one clock: same machine), so the figure covers the run loop, the server-sent
event and the page's drawing. CPU: this process (recogniser, live-view encoding, server) over
``--seconds`` with no screen (before and after the screens, averaged: the machine's other load
drifts), then the same with the page open at ``--view-fps``, plus the
browser's own processes; each as % of one core. Measured twice: with the Playwright-driven
browser (whose debugger connection costs it some CPU of its own), and with a plain headless
Chromium showing the page, as on a kiosk; the browser's CPU also by Chromium process type
(browser, renderer, gpu-process, utility). The live view's frames drawn a second are counted by the
page (Playwright run). An image source is turned into a still video.
Needs playwright (the [dev] extra) and a Chromium.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import psutil


def _cpu_while_viewed(me, browsers, station, seconds: float) -> tuple[float, dict[str, float], float]:
    """(this process's CPU, the browser's CPU by Chromium process type, in % of one core; live
    view frames encoded per second) over ``seconds`` of the page being shown."""
    cpu0, bcpu0, t0 = _cpu_seconds([me]), _cpu_by_kind(browsers), time.perf_counter()
    e0 = station.view.encoded
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    bcpu1 = _cpu_by_kind(browsers)
    by_kind = {kind: (bcpu1[kind] - bcpu0.get(kind, 0.0)) / elapsed * 100.0 for kind in sorted(bcpu1)}
    return (_cpu_seconds([me]) - cpu0) / elapsed * 100.0, by_kind, (station.view.encoded - e0) / elapsed


def _cpu_alone(me: psutil.Process, seconds: float) -> float:
    """This process's CPU in % of one core over ``seconds`` with no screen."""
    cpu0, t0 = _cpu_seconds([me]), time.perf_counter()
    time.sleep(seconds)
    return (_cpu_seconds([me]) - cpu0) / (time.perf_counter() - t0) * 100.0


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(_cpu_by_kind(processes).values())


def _cpu_by_kind(processes: list[psutil.Process]) -> dict[str, float]:
    """CPU seconds of ``processes`` by Chromium process type (``--type=``: renderer, gpu-process,
    utility, zygote; "browser" for the main process and any other)."""
    totals: dict[str, float] = {}
    for p in processes:
        try:
            t = p.cpu_times()
            kind = next((a.split("=", 1)[1] for a in p.cmdline() if a.startswith("--type=")), "browser")
        except psutil.Error:
            continue
        totals[kind] = totals.get(kind, 0.0) + t.user + t.system
    return totals


def _shares(by_kind: dict[str, float]) -> dict[str, float]:
    return {kind: round(pct, 1) for kind, pct in by_kind.items() if kind != "zygote" or pct >= 0.05}


def _browser_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if "chrom" in p.name().lower()]


def _plain_browser(chromium: str, url: str, profile: Path) -> subprocess.Popen:
    """A headless Chromium showing ``url`` with no debugger attached (1024x600, as the measured page)."""
    return subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--window-size=1024,600", "--hide-scrollbars",
                             "--mute-audio", "--no-first-run", f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(bundle: Path, source: Path, seconds: float, view_fps: int, chromium: str, warmup_s: float = 3.0,
            view_width: int = 320) -> dict:
    from playwright.sync_api import sync_playwright

    from shelfsight.edge.kiosk import BackgroundServer, KioskOptions, KioskStation
    from shelfsight.edge.runtime.options import RecognizerOptions

    work = Path(tempfile.mkdtemp(prefix="kiosk-latency-"))
    if source.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        from shelfsight.tools.make_video import make_video

        source = make_video([source], work / "still.avi", fps=15, hold=60, gap=0)
    station = KioskStation(RecognizerOptions(bundle, top_k=5, search_k=5), str(source),
                           KioskOptions(store=work / "feedback", staff_token="latency-tool", view_fps=view_fps,
                                        view_width=view_width, source_fps=15.0), loop=True, sinks=())
    me = psutil.Process()
    station.start()
    server = BackgroundServer(station).start()
    try:
        time.sleep(warmup_s)
        alone_before = _cpu_alone(me, seconds)
        encoded_before = station.view.encoded
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1024, "height": 600})
            page.goto(server.url)
            page.wait_for_selector(".candidate", timeout=10_000)
            time.sleep(warmup_s)
            page.evaluate("window.__kiosk.rendered = []")
            drawn = "window.__kiosk.viewFrames ?? null"  # null: a page that does not count them
            drawn0, t0 = page.evaluate(drawn), time.perf_counter()
            viewed, browser_kinds, view_fps_measured = _cpu_while_viewed(me, _browser_processes(), station, seconds)
            drawn1 = page.evaluate(drawn)
            drawn_fps = None if drawn0 is None else round((drawn1 - drawn0) / (time.perf_counter() - t0), 2)
            live_view = page.evaluate("document.getElementById('live').tagName.toLowerCase()")
            rendered = page.evaluate("window.__kiosk.rendered")
            browser.close()
        plain = _plain_browser(chromium, server.url, work / "profile")
        try:
            time.sleep(warmup_s + 2.0)  # start, load, connect
            root = psutil.Process(plain.pid)
            viewed_plain, plain_kinds, plain_fps = _cpu_while_viewed(
                me, [root, *root.children(recursive=True)], station, seconds)
        finally:
            plain.terminate()
            plain.wait(10)
            shutil.rmtree(work / "profile", ignore_errors=True)  # the browser's profile: megabytes
        time.sleep(1.0)  # the stream's end
        alone_after = _cpu_alone(me, seconds)
        alone = (alone_before + alone_after) / 2  # the machine's other load drifts: both sides of the screens
        latency = np.array([(r["shown"] - r["captured"]) * 1000.0 for r in rendered])
        rates = station.view.rates()
        browser_cpu, plain_cpu = sum(browser_kinds.values()), sum(plain_kinds.values())
    finally:
        server.close()
        station.stop()
    return {
        "bundle": str(bundle), "source": str(source), "seconds": seconds, "view_fps": view_fps,
        "view_width": view_width,
        "frames_rendered": int(len(latency)),
        "latency_ms": {"p50": round(float(np.percentile(latency, 50)), 1),
                       "p95": round(float(np.percentile(latency, 95)), 1),
                       "max": round(float(latency.max()), 1)} if len(latency) else None,
        "capture_to_answer_ms": {"p50": rates["answer_p50_ms"], "p95": rates["answer_p95_ms"]},
        "inference_p50_ms": rates["inference_p50_ms"],
        "live_view_fps": round(view_fps_measured, 2), "live_view_drawn_fps": drawn_fps,
        "live_view_element": live_view, "frames_encoded_without_screen": encoded_before,
        "cpu_pct_of_one_core": {"kiosk_process_no_screen": round(alone, 1),
                                "kiosk_process_no_screen_before_after": [round(alone_before, 1), round(alone_after, 1)],
                                "kiosk_process_with_screen": round(viewed, 1),
                                "ui_server_side": round(viewed - alone, 1), "browser": round(browser_cpu, 1),
                                "browser_by_process": _shares(browser_kinds),
                                "ui_total": round(viewed - alone + browser_cpu, 1),
                                "plain_browser": {"kiosk_process_with_screen": round(viewed_plain, 1),
                                                  "ui_server_side": round(viewed_plain - alone, 1),
                                                  "browser": round(plain_cpu, 1),
                                                  "browser_by_process": _shares(plain_kinds),
                                                  "ui_total": round(viewed_plain - alone + plain_cpu, 1),
                                                  "live_view_fps": round(plain_fps, 2)}},
        "device": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                   "load_average": [round(x, 2) for x in os.getloadavg()]},
    }


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A video, or an image shown as a still video.")
@click.option("--seconds", type=click.FloatRange(2, 600), default=10.0, show_default=True,
              help="Length of each measuring window.")
@click.option("--view-fps", type=click.IntRange(1, 30), default=15, show_default=True)
@click.option("--view-width", type=click.IntRange(64, 4096), default=320, show_default=True,
              help="Width of the live view in pixels.")
@click.option("--chromium", default="/usr/bin/chromium", show_default=True, help="The browser to drive.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here (JSON).")
def main(bundle, source, seconds, view_fps, view_width, chromium, out):
    """Frame -> top-3 on screen latency (p50/p95) and the UI's CPU cost at a VIEW_FPS live view."""
    report = measure(bundle, source, seconds, view_fps, chromium, view_width=view_width)
    text = json.dumps(report, indent=2)
    if out:
        out.write_text(text + "\n")
    click.echo(text)


if __name__ == "__main__":
    main()
