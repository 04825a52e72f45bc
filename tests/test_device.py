"""`Device`: run options + sync options wired once (what `shelfsight run` calls)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from edge_fakes import ColourRecognizer, colour_frame
from shelfsight.edge.device import Device, DeviceOptions
from shelfsight.edge.pipeline.runner import RunOptions
from shelfsight.edge.runtime.options import RecognizerOptions, RunningMode
from shelfsight.edge.runtime.smoothing import SmoothingOptions
from shelfsight.edge.sync.outbox import Outbox
from shelfsight.edge.sync.service import SyncConfig
from shelfsight.errors import ConfigError


class ClosingColourRecognizer(ColourRecognizer):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def _folder(tmp_path: Path, labels: list[str]) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, label in enumerate(labels):
        cv2.imwrite(str(folder / f"{i:03d}.png"), colour_frame(label))
    return folder


@pytest.mark.parametrize("kwargs, message", [
    ({"recognizer": RecognizerOptions("b", running_mode=RunningMode.VIDEO)},
     "the run loop smooths frames itself .* not video"),
    ({"recognizer": "b"}, "device recognizer must be RecognizerOptions, got str"),
    ({"run": {"max_frames": 3}}, "device run options must be RunOptions, got dict"),
    ({"sync": Path("outbox.db")}, "device sync must be a SyncConfig or None, got PosixPath"),
    ({"sinks": ["stdout"]}, "device sinks must be a tuple of sink specs, got list"),
    ({"metrics_port": 70000}, "metrics_port must be a port number 0..65535 or None, got 70000"),
])
def test_device_options_refuse_what_they_cannot_run(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DeviceOptions(**{"recognizer": RecognizerOptions("b"), "source": "0", **kwargs})


def test_events_reach_the_sinks_and_the_outbox_and_everything_is_closed(tmp_path):
    source = _folder(tmp_path, ["apple"] * 4 + ["lime"] * 4)
    made: list[tuple[Path, ClosingColourRecognizer]] = []

    def factory(bundle_dir: Path) -> ClosingColourRecognizer:
        made.append((bundle_dir, ClosingColourRecognizer()))
        return made[-1][1]

    events, outbox = tmp_path / "events.jsonl", tmp_path / "outbox.db"
    options = DeviceOptions(RecognizerOptions(tmp_path / "bundle"), source=str(source),
                            sinks=(f"jsonl:{events}",), sync=SyncConfig(outbox=outbox),
                            run=RunOptions(smoothing=SmoothingOptions(stable_frames=3, reset_frames=2)))
    device = Device(options, recognizer_factory=factory)
    summary = device.run(handle_signals=False)

    assert (summary.frames, summary.recognized, summary.events, summary.stopped_by) == (8, 8, 2, "end of source")
    assert [(path, rec.closed) for path, rec in made] == [(tmp_path / "bundle", 1)]
    assert device.bundle_dir == tmp_path / "bundle"
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["label"], e["frame"]) for e in written] == [("apple", 2), ("lime", 6)]
    with Outbox(outbox) as queued:  # the service closed its outbox: a second process may open it
        batch = queued.claim()
    assert [e["id"] for e in batch.events] == [e["id"] for e in written]


@pytest.mark.slow
def test_a_bundle_store_gets_the_bundle_once_and_the_device_runs_the_stores_copy(int8_bundle, sample_data,
                                                                                  tmp_path):
    from shelfsight.bundle import load_bundle
    from shelfsight.edge.sync.bundle_store import BundleStore
    from shelfsight.edge.sync.http import HttpOptions
    from shelfsight.edge.sync.updates import UpdateOptions

    banana = sample_data / "val" / "Fruit" / "Banana" / "Banana_001.jpg"
    events, store_dir = tmp_path / "events.jsonl", tmp_path / "store"
    token = tmp_path / "token"
    token.write_text("device-token\n")
    updates = UpdateOptions("http://127.0.0.1:9/v1/manifest", http=HttpOptions(token_file=token), interval_s=3600)
    sync = SyncConfig(store_dir=store_dir, updates=updates)  # nothing listens on port 9: the poll just fails
    options = DeviceOptions(RecognizerOptions(int8_bundle, search_k=0, unknown_threshold=0.0), source=str(banana),
                            sinks=(f"jsonl:{events}",), sync=sync,
                            run=RunOptions(smoothing=SmoothingOptions(stable_frames=1)))
    first = Device(options).run(handle_signals=False)
    bundle_id = load_bundle(int8_bundle).bundle_id
    store = BundleStore(store_dir)
    assert store.current_id == bundle_id
    again = Device(options)
    again.run(handle_signals=False)  # the store is not empty: nothing is installed again
    assert again.bundle_dir == store.current and [p.name for p in store.versions.iterdir()] == [bundle_id]
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert first.events == 1 and len(written) == 2
    assert written[0]["label"] == written[1]["label"] == "Banana"
