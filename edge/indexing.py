"""Build the bundle's catalog index with the bundle's own model (no TensorFlow).

Catalog images are embedded through the same .tflite the device runs, so queries and
index vectors come from the same (int8) model. One item per product (SKU, else label);
several images per item. With a val split, the index is tuned on val queries, a
similarity threshold for "unknown" is calibrated on them, and item-level recall@1/@5 is
measured (natural -> catalog images only, and natural -> everything indexed). An index of
the natural photos also classifies: the manifest gets a ``fusion`` section
(`runtime.fusion`), and the device blends the nearest items' votes into the class scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shelfsight.bundle import load_bundle
from shelfsight.datasets import Dataset, Sample, load_dataset
from shelfsight.errors import DatasetError
from shelfsight.images import UnreadableImage, read_image
from shelfsight.metrics import calibrate_threshold, hit_rate_at_k
from shelfsight.preprocess import prepare

from .catalog.items import Catalog, CatalogItem
from .runtime.fusion import FusionSpec, fuse_batch
from .runtime.recognizer import Recognizer
from .catalog.search import CatalogIndex, IndexOptions
from .catalog.tuning import TuningOptions
from .catalog.vectors import ExactSearch, unit_rows

log = logging.getLogger(__name__)


def item_id_of(sample: Sample) -> str:
    return sample.sku or sample.label


def embed_samples(rec: Recognizer, samples, progress: bool = True, desc: str = "embedding"):
    """Embeddings and class scores of the readable samples; returns (vectors, scores, kept
    samples, skipped count)."""
    vectors, scores, kept, skipped = [], [], [], 0
    for s in tqdm(samples, desc=desc, disable=not progress, leave=False):
        try:
            frame = read_image(s.path)
        except (UnreadableImage, OSError) as e:
            log.warning("skipped %s", e)
            skipped += 1
            continue
        score, vector = rec.infer(prepare(frame, rec.spec))
        vectors.append(vector)
        scores.append(score)
        kept.append(s)
    dim = rec.model.outputs["embedding"].shape[-1]
    if not vectors:
        return np.zeros((0, dim), np.float32), np.zeros((0, len(rec.labels)), np.float32), kept, skipped
    return np.stack(vectors), np.stack(scores), kept, skipped


def catalog_samples(ds: Dataset, include_train: bool) -> list[Sample]:
    samples = list(ds.catalog)
    if include_train or not samples:
        samples += list(ds.samples)
    return samples


def build_index(bundle_path: str | Path, catalog_data: str | Path, include_train: bool = True,
                target_recall: float = 0.95, pca_dim: int | None = None, accept_share: float = 0.95,
                backend: str = "auto", progress: bool = True, fusion: bool = True) -> dict[str, Any]:
    """Embed the catalog of ``catalog_data`` with the bundle's model, index it into the bundle,
    and update the manifest. Returns a report (counts, tuning, recall, threshold).

    ``fusion``: with the train photos indexed, classify through the index too (`FusionSpec`'s
    defaults); an iconic-only index (one studio image per product) only searches.
    """
    bundle = load_bundle(bundle_path)
    train = load_dataset(catalog_data, "train")
    try:
        val = load_dataset(catalog_data, "val")
    except DatasetError:
        val = None
    with Recognizer(bundle, search_k=0) as rec:
        samples = catalog_samples(train, include_train)
        catalog_of(samples)  # a barcode listed by two products is refused before any image is embedded
        vectors, _, kept, skipped = embed_samples(rec, samples, progress, "catalog images")
        if not kept:
            raise DatasetError(f"{catalog_data}: no readable catalog images ({skipped} skipped)")
        queries, val_scores, val_kept, _ = (embed_samples(rec, val.samples, progress, "val queries")
                                            if val else (None, None, [], 0))
    catalog = catalog_of(kept)
    options = IndexOptions(TuningOptions(target_recall=target_recall, backend=backend), pca_dim=pca_dim)
    index = CatalogIndex.build(vectors, [item_id_of(s) for s in kept], catalog, bundle.root, bundle.model_sha256,
                               options, queries=queries if queries is not None and len(queries) >= 10 else None,
                               progress=(lambda line: log.info(line)) if progress else None)
    report: dict[str, Any] = {"catalog_images": len(kept), "items": len(catalog), "skipped_images": skipped}
    thresholds = dict(bundle.thresholds)
    if queries is not None and len(queries):
        truth = [item_id_of(s) for s in val_kept]
        found = index.search_batch(queries, k=5)
        hits = hit_rate_at_k([[m.item_id for m in r] for r in found], truth, (1, 5))
        report["recall_at_1"], report["recall_at_5"] = hits[1], hits[5]
        top = np.array([m[0].similarity if m else -1.0 for m in found])
        thresholds["unknown_similarity"] = calibrate_threshold(top, accept_share)
        report["unknown_similarity"] = thresholds["unknown_similarity"]
        iconic = [i for i, s in enumerate(kept) if s in set(train.catalog)]
        if iconic:
            report.update(_recall_against(vectors[iconic], [item_id_of(kept[i]) for i in iconic], queries, truth,
                                          "iconic_"))
    fusion_spec = FusionSpec() if (fusion and include_train) else None
    if fusion_spec and queries is not None and len(queries):
        report.update(_fused_accuracy(index, val_scores, queries, val_kept, bundle.labels, fusion_spec))
    spec, index_files = index.spec, list(index.files)
    index.close()
    fused = fusion_spec.to_manifest() if fusion_spec else None
    report["fusion"] = fused
    bundle.with_index(spec, index_files, thresholds=thresholds, fusion=fused,
                      metrics=dict(bundle.manifest.get("metrics", {}), search=report))
    CatalogIndex.load(bundle.root, bundle.model_sha256).remove_unused_files()
    return report


def catalog_of(kept: list[Sample]) -> Catalog:
    """One catalog item per product (SKU, else label), listing all of its images and barcodes."""
    items: dict[str, CatalogItem] = {}
    images: dict[str, list[str]] = {}
    codes: dict[str, dict[str, None]] = {}
    for s in kept:
        images.setdefault(item_id_of(s), []).append(str(s.path))
        codes.setdefault(item_id_of(s), {}).update(dict.fromkeys(s.barcodes))
    for s in kept:
        iid = item_id_of(s)
        if iid not in items:
            extra = {"coarse": s.coarse} if s.coarse else {}
            items[iid] = CatalogItem(iid, label=s.label, sku=s.sku, name=s.name, images=tuple(images[iid]), extra=extra,
                                     barcodes=tuple(codes[iid]))
    return Catalog(items.values())


def _fused_accuracy(index: CatalogIndex, scores: np.ndarray, queries: np.ndarray, samples: list[Sample],
                    labels: tuple[str, ...], spec: FusionSpec) -> dict[str, float]:
    """Val top-1 of the classifier alone and fused with this index (what the device will answer)."""
    truth = np.array([labels.index(s.label) if s.label in labels else -1 for s in samples])
    fused = fuse_batch(scores, queries, index, labels, spec)
    return {"val_top1_classifier": float(np.mean(scores.argmax(1) == truth)),
            "val_top1_fused": float(np.mean(fused.argmax(1) == truth))}


def _recall_against(vectors: np.ndarray, ids: list[str], queries: np.ndarray, truth: list[str],
                    prefix: str) -> dict[str, float]:
    """Item-level recall@1/@5 of exact search over a subset of catalog vectors."""
    search = ExactSearch(unit_rows(vectors, "subset"))
    hits = search.query_batch(unit_rows(queries, "queries"), min(len(ids), 20))
    ranked = [list(dict.fromkeys(ids[r] for r in rows)) for rows, _sims in hits]
    rate = hit_rate_at_k(ranked, truth, (1, 5))
    return {f"{prefix}recall_at_1": rate[1], f"{prefix}recall_at_5": rate[5]}
