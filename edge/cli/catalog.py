"""Catalog commands: `shelfsight index`, `shelfsight enroll`, `shelfsight search`."""
from __future__ import annotations

import json

import click

from shelfsight.console import progress_disabled
from shelfsight.errors import ConfigError


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
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--sku", required=True, help="Item id / SKU of the new product.")
@click.option("--name", default="", help="Display name.")
@click.option("--label", default="", help="Class label (default: the name or SKU).")
def enroll(bundle, images, sku, name, label):
    """Add a product on the device from a few photos: searchable at once, kept across restarts."""
    from ..catalog.items import CatalogItem
    from ..runtime.recognizer import Recognizer
    from shelfsight.images import UnreadableImage, read_image

    with Recognizer.create_from_bundle(bundle, search_k=1) as rec:
        if rec.index is None:
            raise ConfigError(f"{bundle} has no search index; build one with `shelfsight index BUNDLE --catalog DATA`")
        vectors, used = [], []
        for path in images:
            try:
                vectors.append(rec.embed(read_image(path)))
                used.append(path)
            except (UnreadableImage, OSError) as e:
                click.echo(f"skipped {path}: {e}", err=True)
        if not vectors:
            raise ConfigError("none of the images could be read")
        import numpy as np

        rec.index.enroll(CatalogItem(sku, label=label or name or sku, sku=sku, name=name, images=tuple(used)),
                         np.stack(vectors))
    click.echo(json.dumps({"enrolled": sku, "photos": len(used), "skipped": len(images) - len(used)}))


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@click.option("-k", "--top-k", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Also show items under the unknown threshold.")
def search(bundle, image, top_k, show_all):
    """Find the catalog items that look most like IMAGE."""
    from shelfsight.images import UnreadableImage, read_image

    from ..runtime.recognizer import Recognizer

    try:
        frame = read_image(image)
    except (UnreadableImage, OSError) as e:  # as classify reports it, but the only image: an error
        raise ConfigError(str(e) if isinstance(e, UnreadableImage) else f"{image}: {e.strerror or e}") from None
    with Recognizer.create_from_bundle(bundle, search_k=top_k) as rec:
        if rec.index is None:
            raise ConfigError(f"{bundle} has no search index; build one with `shelfsight index BUNDLE --catalog DATA`")
        embedding = rec.embed(frame)
        threshold = None if show_all else rec.similarity_threshold
        matches = rec.index.search(embedding, top_k, min_similarity=threshold)
    if not matches:
        click.echo(f"{image}: unknown (nothing above similarity {rec.similarity_threshold:.3f})")
    for m in matches:
        click.echo(f"{m.similarity:.4f}  {m.item_id}  {m.name or m.label}")
