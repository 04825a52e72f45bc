"""Per-object mode on the command line: `run --objects ...` options and `shelfsight calibrate`.

    shelfsight run BUNDLE --source VIDEO --objects background [--scene scene.npz] [--count-line x1,y1,x2,y2]
    shelfsight run BUNDLE --source 0 --objects detector:ssd.tflite
    shelfsight calibrate SOURCE --out scene.npz          # film the empty scene once

No TensorFlow on these paths.
"""
from __future__ import annotations

from pathlib import Path

import click

from shelfsight.errors import ConfigError


def objects_options(f):
    """The per-object options of `shelfsight run`."""
    f = click.option("--scene", type=click.Path(), default=None,
                     help="Empty-scene file from `shelfsight calibrate` (background backend; default: learn the "
                          "first frames).")(f)
    f = click.option("--count-line", default=None,
                     help="Count objects crossing the segment x1,y1,x2,y2 (frame pixels), per SKU and direction.")(f)
    f = click.option("--objects", "objects", default=None, metavar="BACKEND",
                     help="Every product in view: 'background' (fixed camera, learned empty scene) or "
                          "'detector:PATH.tflite' (SSD-style TFLite detector). Default: one answer per frame.")(f)
    return f


def build_objects(objects: str | None, count_line: str | None, scene: str | None, runtime: str = "auto",
                  threads: int | None = None):
    """The `ObjectsOptions` for the run's flags; None without ``--objects``.

    Raises:
        ConfigError: a bad value, or a flag that needs another one.
    """
    from ..objects import BackgroundOptions, CountLine, DetectorOptions, ObjectsOptions, parse_backend

    if objects is None:
        for name, value in (("--count-line", count_line), ("--scene", scene)):
            if value is not None:
                raise ConfigError(f"{name} needs --objects (background or detector:PATH.tflite)")
        return None
    kind, path = parse_backend(objects)
    if kind == "detector":
        if scene is not None:
            raise ConfigError("--scene is for --objects background; a detector needs no empty scene")
        if not path.is_file():
            raise ConfigError(f"detector {path} does not exist")
    if scene is not None and not Path(scene).is_file():
        raise ConfigError(f"scene file {scene} does not exist (make one with `shelfsight calibrate`)")
    return ObjectsOptions(
        backend=objects,
        background=BackgroundOptions(scene=Path(scene) if scene else None),
        detector=DetectorOptions(model=path, runtime=runtime, threads=threads) if path is not None else None,
        count_line=CountLine.parse(count_line) if count_line is not None else None)


@click.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(), help="Scene file to write (.npz).")
@click.option("--frames", "count", type=click.IntRange(1, 10_000), default=60, show_default=True,
              help="Frames of the empty scene to read (a scene file keeps 30 of them, evenly picked).")
@click.option("--skip", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Frames to drop first (a camera's auto-exposure settling).")
def calibrate(source, out, count, skip):
    """Learn the empty scene of a fixed camera for `run --objects background --scene OUT`.

    SOURCE is a camera, stream, video or folder, as for `run --source`; nothing may be in view.
    """
    from ..objects import save_scene
    from ..pipeline.sources import open_source

    frames = []
    with open_source(source) as src:
        seen = 0
        while len(frames) < count:
            frame = src.read()
            if frame is None:
                break
            seen += 1
            if seen > skip:
                frames.append(frame.image)
    if not frames:
        raise ConfigError(f"source {source} gave no frames{f' after skipping {skip}' if skip else ''}")
    path = save_scene(frames, out)
    h, w = frames[0].shape[:2]
    click.echo(f"{path}: empty scene from {len(frames)} frames of {w}x{h}", err=True)
