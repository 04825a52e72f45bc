"""Retrieval fusion: the class scores blended with the nearest catalog items' votes, the same
on the device (`Recognizer`) as in `eval`, and written by `shelfsight index` only for an index
of natural photos."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from shelfsight.bundle import load_bundle
from shelfsight.edge.runtime.fusion import FusionSpec, fuse
from shelfsight.errors import BundleError


@dataclass(frozen=True)
class M:
    label: str
    similarity: float


CLASS_OF = {"a": 0, "b": 1, "c": 2}


def test_each_class_votes_with_its_best_item_among_the_k_nearest():
    matches = [M("enrolled-only", 0.95), M("b", 0.9), M("a", 0.8), M("b", 0.7), M("c", 0.1)]
    fused = fuse(np.array([0.6, 0.3, 0.1]), matches, CLASS_OF, FusionSpec(weight=0.5, temperature=0.1, k=4))
    share_b = math.e / (1 + math.e)  # exp(0.9 / 0.1) against exp(0.8 / 0.1); c is the 5th match, beyond k
    np.testing.assert_allclose(fused, [0.3 + 0.5 * (1 - share_b), 0.15 + 0.5 * share_b, 0.05], atol=1e-6)
    assert int(np.argmax(fused)) == 1 and fused.sum() == pytest.approx(1.0)


def test_no_vote_or_no_weight_leaves_the_classifier_alone():
    scores = np.array([0.6, 0.3, 0.1], np.float32)
    np.testing.assert_array_equal(fuse(scores, [], CLASS_OF, FusionSpec()), scores)
    np.testing.assert_array_equal(fuse(scores, [M("x", 0.9)], CLASS_OF, FusionSpec()), scores)
    np.testing.assert_array_equal(fuse(scores, [M("b", 0.9)], CLASS_OF, FusionSpec(weight=0.0)), scores)


def test_a_malformed_fusion_section_is_refused():
    assert FusionSpec.from_manifest(None) is None
    assert FusionSpec.from_manifest({"weight": 0.25, "temperature": 0.05, "k": 3}) == FusionSpec(0.25, 0.05, 3)
    with pytest.raises(BundleError, match="expected weight, temperature, k"):
        FusionSpec.from_manifest({"weight": 0.5, "extra": 1})
    with pytest.raises(BundleError, match="expected 0 <= weight <= 1"):
        FusionSpec.from_manifest({"weight": 2.0})


@pytest.mark.slow
def test_the_device_and_eval_give_the_same_fused_answer(bundle_copy, sample_data):
    from shelfsight.app.evaluation import evaluate
    from shelfsight.datasets import load_dataset
    from shelfsight.edge.indexing import build_index
    from shelfsight.edge.runtime import Recognizer, RecognizerOptions
    from shelfsight.images import read_image

    report = build_index(bundle_copy, sample_data, progress=False)
    assert report["fusion"] == {"weight": 0.5, "temperature": 0.1, "k": 5}
    bundle = load_bundle(bundle_copy)
    assert bundle.manifest["fusion"] == report["fusion"]
    val = load_dataset(sample_data, "val")
    fused_hits = alone_hits = 0
    with Recognizer.create_from_options(RecognizerOptions(bundle_copy)) as rec, \
            Recognizer.create_from_options(RecognizerOptions(bundle_copy, fusion=False)) as plain:
        assert rec.fusion == FusionSpec() and plain.fusion is None
        for s in val.samples:
            frame = read_image(s.path)
            fused_r, alone_r = rec.recognize(frame), plain.recognize(frame)
            assert alone_r.matches == fused_r.matches  # fusion changes the classes, not what search reports
            fused_hits += fused_r.predictions[0].label == s.label
            alone_hits += alone_r.predictions[0].label == s.label
    ev = evaluate(bundle_copy, sample_data, progress=False)
    n = len(val.samples)
    assert ev["top1"] == pytest.approx(fused_hits / n) and ev["classifier_alone"]["top1"] == pytest.approx(alone_hits / n)


@pytest.mark.slow
def test_an_iconic_only_index_only_searches(bundle_copy, sample_data):
    from shelfsight.edge.indexing import build_index
    from shelfsight.edge.runtime import Recognizer

    assert build_index(bundle_copy, sample_data, include_train=False, progress=False)["fusion"] is None
    with Recognizer(load_bundle(bundle_copy)) as rec:
        assert rec.index is not None and rec.fusion is None


@pytest.mark.slow
def test_export_indexes_the_bundle_by_default_and_archives_it_with_the_index(tiny_run, sample_data, tmp_path):
    import json
    import subprocess
    import sys
    import tarfile

    out = tmp_path / "b"
    done = subprocess.run([sys.executable, "-m", "shelfsight", "-q", "export", str(tiny_run), "--out", str(out),
                           "--ptq", "--calibration-images", "32", "--data", str(sample_data), "--archive"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    index = summary["index"]
    assert (index["items"], index["catalog_images"], index["fusion"]) == (12, 132, FusionSpec().to_manifest())
    bundle = load_bundle(out)
    assert bundle.index["item_count"] == 12 and bundle.manifest["fusion"] == index["fusion"]
    assert index["val_top1_fused"] == bundle.manifest["metrics"]["search"]["val_top1_fused"]
    with tarfile.open(summary["archive"]) as tar:
        names = {n.split("/", 1)[-1] for n in tar.getnames()}
    assert "index.json" in names and set(bundle.index["checksums"]) <= names
    from_archive = load_bundle(summary["archive"])
    assert from_archive.manifest["fusion"] == index["fusion"] and from_archive.index["item_count"] == 12
