"""Catalog commands: `shelfsight index`, `shelfsight enroll`, `shelfsight search`."""
from __future__ import annotations

import json

import click

from shelfsight.console import progress_disabled
from shelfsight.errors import ConfigError

from .common import ImageArgs, open_recognizer, runtime_options, top_k_option


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--catalog", "catalog_data", type=click.Path(),
              help="Dataset whose catalog (iconic) and train images are indexed; its val split tunes and calibrates.")
@click.option("--iconic-only", is_flag=True, help="Index only the catalog images, not the train photos.")
@click.option("--target-recall", type=click.FloatRange(0.5, 1.0), default=0.95, show_default=True,
              help="Recall@10 against exact search the ANN index must reach.")
@click.option("--pca", "pca_dim", type=click.IntRange(2, 4096), default=None, help="Project embeddings to DIM.")
@click.option("--backend", type=click.Choice(["auto", "annoy", "exact"]), default="auto", show_default=True)
@click.option("--rebuild", is_flag=True,
              help="Re-embed the catalog with the bundle's current model, or fold on-device enrolments in.")
@click.option("--fusion/--no-fusion", default=True, show_default=True,
              help="Classify through the index too: the nearest train photos' votes blend into the class scores.")
def index(bundle, catalog_data, iconic_only, target_recall, pca_dim, backend, rebuild, fusion):
    """Embed the catalog with the bundle's own model and write a search index into the bundle."""
    from shelfsight.bundle import load_bundle

    from ..indexing import build_index
    from ..catalog.search import CatalogIndex

    if rebuild and not catalog_data:
        b = load_bundle(bundle)
        if not b.index:
            raise ConfigError(f"{bundle} has no index to rebuild; build one with --catalog DATA")
        idx = CatalogIndex.load(b.root, b.model_sha256)  # refuses an index of another model: re-embed with --catalog
        spec = idx.rebuild()
        b.with_index(spec, list(idx.files))
        idx.remove_unused_files()
        click.echo(json.dumps({"rebuilt": True, "items": spec["item_count"], "vectors": spec["vector_count"]}))
        return
    if not catalog_data:
        raise click.UsageError("--catalog DATA is needed to build an index")
    report = build_index(bundle, catalog_data, include_train=not iconic_only, target_recall=target_recall,
                         pca_dim=pca_dim, backend=backend, progress=not progress_disabled(), fusion=fusion)
    click.echo(json.dumps(report))


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@click.option("--sku", required=True, help="Item id / SKU of the new product.")
@click.option("--name", default="", help="Display name.")
@click.option("--label", default="", help="Class label (default: the name or SKU).")
@runtime_options
def enroll(bundle, images, sku, name, label, runtime, threads, delegate):
    """Add a product on the device from a few photos (files, folders or globs): searchable at
    once, kept across restarts."""
    import numpy as np

    from ..catalog.items import CatalogItem

    inputs = ImageArgs(images)
    with open_recognizer(bundle, runtime, threads, delegate, search_k=1) as rec:
        if rec.index is None:
            raise ConfigError(f"{bundle} has no search index; build one with `shelfsight index BUNDLE --catalog DATA`")
        vectors, used = [], []
        for path, frame in inputs:
            vectors.append(rec.embed(frame))
            used.append(path)
        if not vectors:
            raise ConfigError("none of the images could be read")
        rec.index.enroll(CatalogItem(sku, label=label or name or sku, sku=sku, name=name, images=tuple(used)),
                         np.stack(vectors))
    click.echo(json.dumps({"enrolled": sku, "photos": len(used), "skipped": inputs.skipped}))


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("images", nargs=-1, required=True)
@top_k_option(5, "Similar catalog items per image.")
@click.option("--all", "show_all", is_flag=True, help="Also show items under the unknown threshold.")
@click.option("--json", "as_json", is_flag=True, help="One result record (JSON) per line and image.")
@runtime_options
def search(bundle, images, top_k, show_all, as_json, runtime, threads, delegate):
    """Find the catalog items that look most like each image (files, folders or globs).

    --json writes the result schema that classify and events share (shelfsight.result/1):
    "matches" holds the similar items, "label"/"score" the best one (None under the threshold).
    """
    import time

    from ..runtime.results import result_record

    inputs = ImageArgs(images)
    with open_recognizer(bundle, runtime, threads, delegate, search_k=top_k) as rec:
        if rec.index is None:
            raise ConfigError(f"{bundle} has no search index; build one with `shelfsight index BUNDLE --catalog DATA`")
        threshold = None if show_all else rec.similarity_threshold
        for path, frame in inputs:
            t0 = time.perf_counter()
            matches = rec.index.search(rec.embed(frame), top_k, min_similarity=threshold)
            latency_ms = (time.perf_counter() - t0) * 1000.0
            if as_json:
                best = matches[0] if matches and matches[0].similarity >= rec.similarity_threshold else None
                click.echo(json.dumps({"image": path, **result_record(
                    best.label if best else None, best.similarity if best else 0.0, (), matches, latency_ms)}))
                continue
            prefix = f"{path}: " if len(inputs.paths) > 1 else ""
            if not matches:
                click.echo(f"{path}: unknown (nothing above similarity {rec.similarity_threshold:.3f})")
            for m in matches:
                click.echo(f"{prefix}{m.similarity:.4f}  {m.item_id}  {m.name or m.label}")
    inputs.report()
