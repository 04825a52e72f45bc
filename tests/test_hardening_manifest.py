"""Issue 14, medium 5: malformed manifests are refused in one line naming the first violation
by its JSON path, both when a bundle is loaded and when an update is offered."""
from __future__ import annotations

import json

import pytest

from shelfsight.bundle import MANIFEST, load_bundle
from shelfsight.edge.sync.updates import _parse_manifest
from shelfsight.errors import BundleError

from sync_fakes import make_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "b", ["apple", "banana"], b"model bytes", bundle_id="bundle-b")


def rewrite(root, change):
    manifest = json.loads((root / MANIFEST).read_text())
    manifest = change(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root


def drop(section):
    return lambda m: {k: v for k, v in m.items() if k != section}


def entry(name, key, value=None):
    """Set (or, with value None, remove) one key of a file entry."""
    def change(m):
        new = value(m) if callable(value) else value
        m["files"][name].pop(key)
        if new is not None:
            m["files"][name][key] = new
        return m
    return change


CASES = [
    ("list", lambda m: [], r": \$: \[\] is not of type 'object'$"),
    ("null", lambda m: None, r": \$: None is not of type 'object'$"),
    ("no preprocess", drop("preprocess"), r": \$: 'preprocess' is a required property$"),
    ("no files", drop("files"), r": \$: 'files' is a required property$"),
    ("entry without sha256", entry("model.tflite", "sha256"),
     r": \$\.files\['model\.tflite'\]: 'sha256' is a required property$"),
    ("size as a string", entry("labels.txt", "size", lambda m: str(m["files"]["labels.txt"]["size"])),
     r": \$\.files\['labels\.txt'\]\.size: '\d+' is not of type 'integer'$"),
    ("labels count negative", lambda m: {**m, "labels": {**m["labels"], "count": -1}},
     r": \$\.labels\.count: -1 is less than the minimum of 0$"),
    ("preprocess size zero", lambda m: {**m, "preprocess": {**m["preprocess"], "size": 0}},
     r": \$\.preprocess\.size: 0 is less than the minimum of 1$"),
    ("file outside the bundle", lambda m: {**m, "files": {**m["files"], "../etc/passwd": {"sha256": "0" * 64,
                                                                                          "size": 1}}},
     r": \$\.files: '\.\./etc/passwd' does not match"),
    ("threshold a string", lambda m: {**m, "thresholds": {"unknown_score": "high"}},
     r": \$\.thresholds\.unknown_score: 'high' is not of type 'number'$"),
]


@pytest.mark.parametrize("name, change, message", CASES, ids=[c[0] for c in CASES])
def test_malformed_manifest_is_one_line_with_its_path(bundle, name, change, message):
    rewrite(bundle, change)
    with pytest.raises(BundleError, match=message) as e:
        load_bundle(bundle)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(bundle / MANIFEST))


@pytest.mark.parametrize("name, change, message", CASES[2:], ids=[c[0] for c in CASES[2:]])
def test_malformed_offered_manifest_is_refused(bundle, name, change, message):
    raw = json.dumps(change(json.loads((bundle / MANIFEST).read_text()))).encode()
    with pytest.raises(Exception) as e:
        _parse_manifest(raw, 10**9)
    assert type(e.value).__name__ == "_Refused" and "\n" not in str(e.value)
    assert e.value.status == "refused"


def test_a_good_manifest_still_loads(bundle):
    assert load_bundle(bundle).labels == ("apple", "banana")
