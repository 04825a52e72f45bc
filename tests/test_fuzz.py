"""Issue 14's standing guard: seeded random mutations of a valid bundle manifest (and archive),
image file and event batch, generated here (no binary corpus is checked in).

Every case must end as *accepted* (it still means something valid) or *refused* (one line,
a non-zero exit or a 4xx); a traceback, a 5xx or any other exception is *crashed*, and there
must be none. Along the way: a bad bundle offered to a running recogniser is refused and the
running one keeps answering; every image file of a folder run is either processed or counted
as skipped; every event of a batch the server took is held or rejected by id, and good events
sent after the fuzzing are all held. Run with ``-s`` to see the counts.
"""
from __future__ import annotations

import copy
import json
import os
import random
import re
import struct
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import requests
from aiohttp import web

from shelfsight.bundle import UNPACKED_PREFIX, load_bundle, pack_archive
from shelfsight.edge.runtime.recognizer import Recognizer
from shelfsight.edge.runtime.reload import ReloadableRecognizer
from shelfsight.edge.sync.updates import _parse_manifest
from shelfsight.errors import ShelfsightError
from shelfsight.images import UnreadableImage, read_image
from shelfsight.tools.server.store import parse_batch

from cli_run import run_cli
from sync_fakes import TOKEN, server
from tiny_bundle import make_tiny_bundle

SEED = 14
CASES = {"manifest": 250, "archive": 60, "image": 250, "events": 250}
TALLY: dict[str, Counter] = {}

RED_BGR = (0, 0, 255)
PNG_MAGIC = b"\x89PNG"
LONE_SURROGATE = "\ud800"  # valid in JSON text ("\\ud800"), not encodable as UTF-8
WEIRD_STRINGS = ["", " ", "x" * 5000, "../../etc/passwd", "/abs/path", "a/b", "\x00", LONE_SURROGATE, "é" * 10,
                 "NaN", "-1", "1e309", "model.tflite", "labels.txt", "manifest.json", "index.json", "\n\n"]
WEIRD_NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63), 1e308, -1e-308, 0.5, float("nan"), float("inf"), True, False]


DROP = object()  # a section to leave out


def deep(depth: int) -> str:
    """A marker `encode` turns into ``depth`` nested arrays (json.dumps itself would recurse)."""
    return f"@@deep{depth}@@"


def encode(value: Any) -> bytes:
    """JSON text of a mutated value: NaN/Infinity as Python writes them, lone surrogates kept,
    deep markers expanded."""
    text = json.dumps(value, allow_nan=True)
    text = re.sub(r'"@@deep(\d+)@@"', lambda m: "[" * int(m.group(1)) + "0" + "]" * int(m.group(1)), text)
    return text.encode("utf-8", "surrogatepass")


class Mutator:
    """Seeded mutations of JSON values and of bytes."""

    def __init__(self, seed: int, strings: list[str] = WEIRD_STRINGS) -> None:
        self.rng = random.Random(seed)
        self.strings = strings

    def value(self) -> Any:
        kind = self.rng.randrange(7)
        if kind == 0:
            return self.rng.choice(self.strings)
        if kind == 1:
            return self.rng.choice(WEIRD_NUMBERS)
        if kind == 2:
            return self.rng.choice([None, [], {}, [None], {"": None}])
        if kind == 3:
            return deep(self.rng.choice([50, 5000, 100_000]))
        if kind == 4:
            return {self.rng.choice(self.strings): self.rng.choice(WEIRD_NUMBERS)}
        if kind == 5:
            return [self.rng.choice(self.strings)] * self.rng.choice([1, 3, 1000])
        return self.rng.getrandbits(self.rng.choice([8, 64, 200]))

    def paths(self, node: Any, prefix: tuple = ()) -> list[tuple]:
        """The paths (tuples of keys / indexes) into ``node``, the root included, 8 levels deep."""
        out = [prefix]
        if len(prefix) >= 8:
            return out
        if isinstance(node, dict):
            for k, v in node.items():
                out += self.paths(v, prefix + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node[:20]):
                out += self.paths(v, prefix + (i,))
        return out

    def json(self, obj: Any) -> Any:
        """One to three structural changes: replace, delete, add a key, or retype a node."""
        obj = copy.deepcopy(obj)
        for _ in range(self.rng.randint(1, 3)):
            path = self.rng.choice(self.paths(obj))
            if not path:
                obj = self.value() if self.rng.random() < 0.2 else obj
                continue
            parent = obj
            for key in path[:-1]:
                parent = parent[key]
            key, op = path[-1], self.rng.randrange(4)
            if op == 0 or not isinstance(parent, dict):
                parent[key] = self.value()
            elif op == 1:
                del parent[key]
            elif op == 2:
                parent[self.rng.choice(self.strings)] = self.value()
            else:
                old = parent[key]
                parent[key] = (str(old) if not isinstance(old, str) else
                               self.rng.choice([[old], {"value": old}, len(old), None]))
        return obj

    def bytes(self, data: bytes) -> bytes:
        """One to four byte-level changes: flips, cuts, inserts, repeats, magic values, or truncation."""
        data = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            if not data:
                data += bytes([self.rng.randrange(256)])
            op, at = self.rng.randrange(6), self.rng.randrange(len(data))
            if op == 0:
                data[at] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                del data[at:at + self.rng.randint(1, 64)]
            elif op == 2:
                data[at:at] = self.rng.randbytes(self.rng.randint(1, 64))
            elif op == 3:
                data[at:at] = data[at:at + self.rng.randint(1, 256)] * self.rng.randint(2, 50)
            elif op == 4:
                magic = self.rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80"])
                data[at:at + len(magic)] = magic
            else:
                del data[at:]
        return bytes(data)


class Tally:
    """Counts one family's outcomes; a crash keeps its description for the failure message."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.counts = TALLY.setdefault(family, Counter())
        self.crashes: list[str] = []

    def __call__(self, case: int, attempt: Callable[[], str]) -> None:
        self.counts["tried"] += 1
        try:
            outcome = attempt()
        except Exception as e:  # anything the code under test let escape
            outcome = "crashed"
            self.crashes.append(f"case {case}: {type(e).__name__}: {str(e)[:300]}")
        self.counts[outcome] += 1

    def check(self) -> None:
        assert not self.crashes, "\n".join(self.crashes[:10])
        assert self.counts["tried"] == self.counts["refused"] + self.counts["accepted"]


def counts_line(name: str, c: Counter) -> str:
    return f"fuzz {name}: {c['tried']} tried, {c['refused']} refused, {c['accepted']} accepted, {c['crashed']} crashed"


@pytest.fixture(scope="module", autouse=True)
def summary_lines():
    """The counts, printed once the module's tests are done (outside any test's capsys)."""
    yield
    print("\n" + "\n".join(counts_line(name, c) for name, c in TALLY.items()))
    print(counts_line("total", sum(TALLY.values(), Counter())))


def one_line(message: str) -> str:
    assert message.strip() and "\n" not in message.strip() and "Traceback" not in message, repr(message)
    return message


def cli_refusal(code: int, err: str, expected_codes: tuple[int, ...] = (2,)) -> str:
    """A CLI outcome: exit 0 is accepted; a refusal is one 'error: ...' line with a known exit code."""
    if code == 0:
        return "accepted"
    assert code in expected_codes, (code, err)
    assert one_line(err).startswith("error: "), err
    return "refused"


def red_image(size: int = 48) -> np.ndarray:
    return np.full((size, size, 3), RED_BGR, np.uint8)


@pytest.fixture
def bundles(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    good = make_tiny_bundle(tmp_path / "good", bundle_id="good")
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), red_image())
    return good, image


# -- bundles: mutated manifests and archives offered to a running recogniser ------------------

def manifest_corpus(manifest: dict) -> list[bytes]:
    """Issue 14's cases first: the malformed manifests it lists, and deep / non-finite JSON."""
    def changed(**sections: Any) -> bytes:
        return encode({k: v for k, v in {**manifest, **sections}.items() if v is not DROP})

    model_entry = manifest["files"]["model.tflite"]
    return [b"[]", b"null", b"", b"\xff\xfe", encode(deep(200_000)), changed(preprocess=DROP),
            changed(files={**manifest["files"], "model.tflite": {"size": model_entry["size"]}}),
            changed(files={**manifest["files"], "model.tflite": {**model_entry, "size": str(model_entry["size"])}}),
            changed(labels={**manifest["labels"], "count": float("nan")}), changed(schema_version=2),
            changed(thresholds={"unknown_score": float("inf")}), changed(files={"../model.tflite": model_entry})]


def offer(reloader: ReloadableRecognizer, good: Path, offered: Path) -> str:
    """Offer ``offered`` to the running reloader; it must answer with a working bundle after."""
    try:
        reloader.reload(offered)
    except ShelfsightError as e:
        one_line(str(e))
        outcome = "refused"
    else:
        outcome = "accepted"
        try:
            assert reloader.recognize(red_image()).label == "red"  # an accepted bundle works
        finally:
            reloader.reload(good)
    assert reloader.recognize(red_image()).label == "red" and reloader.current.bundle.bundle_id == "good"
    return outcome


def test_fuzz_manifests(tmp_path, bundles, capsys):
    good, image = bundles
    manifest = json.loads((good / "manifest.json").read_text())
    raw = (good / "manifest.json").read_bytes()
    offered = make_tiny_bundle(tmp_path / "offered", bundle_id="good")
    mutate, tally, refused_offers = Mutator(SEED), Tally("manifest"), Counter()
    reloader = ReloadableRecognizer(good, Recognizer.create_from_bundle)
    try:
        corpus = manifest_corpus(manifest)
        for case in range(CASES["manifest"]):
            if case < len(corpus):
                data = corpus[case]
            elif mutate.rng.random() < 0.6:
                data = encode(mutate.json(manifest))
            else:
                data = mutate.bytes(raw)
            (offered / "manifest.json").write_bytes(data)

            def attempt() -> str:
                outcome = offer(reloader, good, offered)
                try:  # what an update offer of the same manifest gets, before any download
                    _parse_manifest(data, 10**9)
                except Exception as e:
                    assert type(e).__name__ == "_Refused" and e.status == "refused", repr(e)
                    one_line(str(e))
                    refused_offers["refused"] += 1
                if case % 8 == 0:  # and the CLI, as a user types it
                    code, _, err = run_cli(["-q", "classify", offered, image], capsys)
                    assert cli_refusal(code, err) == outcome
                return outcome

            tally(case, attempt)
    finally:
        reloader.close()
    tally.check()
    assert tally.counts["refused"] >= CASES["manifest"] // 2  # the mutations do reach the checks


def test_fuzz_archives(tmp_path, bundles):
    good, _ = bundles
    packed = make_tiny_bundle(tmp_path / "packed", bundle_id="good")
    for f in packed.iterdir():
        os.utime(f, (1_765_000_000, 1_765_000_000))
    archive = pack_archive(packed, tmp_path / "good.tar.gz")
    raw = archive.read_bytes()
    raw = raw[:4] + bytes(4) + raw[8:]  # gzip's MTIME: the same bytes on every run (it is not checksummed)
    archive.write_bytes(raw)
    mutate, tally = Mutator(SEED + 1), Tally("archive")
    offered = tmp_path / "offered.tar.gz"
    reloader = ReloadableRecognizer(archive, Recognizer.create_from_bundle)
    try:
        for case in range(CASES["archive"]):
            offered.write_bytes(mutate.bytes(raw))
            tally(case, lambda: offer(reloader, archive, offered))
    finally:
        reloader.close()
    tally.check()
    assert sorted(p.name for p in (tmp_path / "tmp").glob(f"{UNPACKED_PREFIX}*")) == []  # nothing left behind


# -- images: mutated PNG and JPEG files, one at a time and as a folder run ---------------------

def png_with_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with IHDR declaring ``width`` x ``height`` (CRC fixed): a decompression bomb's header."""
    ihdr = png[12:29]
    body = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    return png[:12] + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def image_cases(seed: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    picture[:, :32] = RED_BGR
    png = cv2.imencode(".png", picture)[1].tobytes()
    jpeg = cv2.imencode(".jpg", picture)[1].tobytes()
    mutate = Mutator(seed)
    cases = [png_with_size(png, 20000, 20000), png_with_size(png, 0, 0), png_with_size(png, 2**31 - 1, 1),
             b"", b"\x89PNG\r\n\x1a\n", jpeg[:2], jpeg[:len(jpeg) // 2], b"GIF89a" + bytes(20)]
    while len(cases) < count:
        cases.append(mutate.bytes(mutate.rng.choice([png, jpeg])))
    return cases


def test_fuzz_images(tmp_path, bundles, capsys):
    good, _ = bundles
    folder = tmp_path / "images"
    folder.mkdir()
    tally = Tally("image")
    with Recognizer.create_from_bundle(good) as rec:
        for case, data in enumerate(image_cases(SEED + 2, CASES["image"])):
            path = folder / f"{case:03d}{'.png' if data.startswith(PNG_MAGIC) else '.jpg'}"
            path.write_bytes(data)

            def attempt() -> str:
                try:
                    frame = read_image(path)
                except (UnreadableImage, OSError) as e:
                    one_line(str(e))
                    outcome = "refused"
                else:
                    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
                    assert rec.classify(frame).label in ("red", "green", "blue")
                    outcome = "accepted"
                if case % 8 == 0:
                    code, _, err = run_cli(["-q", "classify", good, path], capsys)
                    assert cli_refusal(code, err) == outcome
                return outcome

            tally(case, attempt)
    tally.check()
    # the whole folder through the run loop: every file is a frame or a skipped (corrupt) input
    summary = tmp_path / "summary.json"
    code, out, err = run_cli(["-q", "run", good, "--source", folder, "--no-quality-gate", "--summary", summary,
                              "--sink", f"jsonl:{tmp_path / 'events.jsonl'}"], capsys)
    assert code == 0 and "Traceback" not in err
    report = json.loads(summary.read_text())
    assert report["frames"] == tally.counts["accepted"]
    assert report["frames"] + report["skipped"].get("corrupt", 0) == CASES["image"]


# -- event batches: the server's parser and a real loopback server -----------------------------

EVENT_CORPUS = [  # issue 14's cases first
    b'{"events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", b'{"events": [{"id": "a", "score": NaN}]}',
    b'{"events": [{"id": "a", "score": -Infinity}]}', b"[]", b"null", b"", b'{"events": null}',
    b'{"events": [{"id": 1}]}', b'{"events": [{"id": ""}]}', b'{"events": [{"id": "' + b"i" * 10_000 + b'"}]}',
    b'{"events": [{"id": "same", "n": 1}, {"id": "same", "n": 2}]}', b'{"events": [{"id": "a\\u0000b"}]}',
]


def event_batch(n: int, prefix: str = "e") -> dict:
    return {"events": [{"id": f"{prefix}{i}", "type": "recognition", "label": "red", "score": 0.9,
                        "timestamp": 1765000000.0 + i, "source": "camera:0",
                        "predictions": [{"label": "red", "score": 0.9}, {"label": "blue", "score": 0.1}],
                        "matches": []} for i in range(n)]}


def test_fuzz_event_batches(tmp_path):
    batch = event_batch(5)
    raw = json.dumps(batch).encode()
    mutate, tally = Mutator(SEED + 3, WEIRD_STRINGS), Tally("events")
    srv = server(tmp_path)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"{srv.url}/v1/events"
    try:
        corpus = EVENT_CORPUS
        for case in range(CASES["events"]):
            if case < len(corpus):
                body = corpus[case]
            else:
                body = encode(mutate.json(batch)) if mutate.rng.random() < 0.7 else mutate.bytes(raw)

            def attempt() -> str:
                try:
                    valid, rejected = parse_batch(body)
                except web.HTTPBadRequest as e:
                    one_line(json.loads(e.text)["error"])
                    expected = None
                else:
                    expected = {event_id for event_id, _ in valid} | set(rejected)
                response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
                assert response.status_code < 500, (response.status_code, response.text[:200])
                if response.status_code >= 400:
                    assert expected is None, (response.status_code, response.text[:200])
                    return "refused"
                answer = response.json()
                assert expected is not None and set(answer["held"]) | set(answer["rejected"]) == expected
                return "accepted"

            tally(case, attempt)
        # nothing lost: good events sent after all that are every one held
        fresh = event_batch(20, prefix="after-fuzz-")
        answer = session.post(url, json=fresh, timeout=10).json()
        assert sorted(answer["held"]) == sorted(e["id"] for e in fresh["events"]) and answer["rejected"] == {}
    finally:
        session.close()
        srv.stop()
    tally.check()
    assert tally.counts["refused"] >= 20 and tally.counts["accepted"] >= 20


def test_an_event_with_a_lone_surrogate_is_rejected_with_a_reason(tmp_path):
    body = json.dumps({"events": [{"id": "e1", "label": LONE_SURROGATE}]}).encode()  # ASCII: "\\ud800"
    srv = server(tmp_path)
    try:
        response = requests.post(f"{srv.url}/v1/events", data=body, timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    finally:
        srv.stop()
    answer = response.json()
    assert response.status_code == 200 and answer["held"] == [] and list(answer["rejected"]) == ["e1"]
