"""What the device commands share: the runtime flags, -k, image arguments, the recogniser."""
from __future__ import annotations

from typing import Iterator

import click
import numpy as np

from shelfsight.errors import ConfigError

RUNTIME_CHOICES = click.Choice(["auto", "litert", "tflite_runtime", "tensorflow"])


def runtime_options(f):
    """--runtime, --threads, --delegate: the same on every command that opens a bundle."""
    f = click.option("--delegate", multiple=True, help="Delegate library (e.g. libedgetpu.so.1); repeatable.")(f)
    f = click.option("--threads", type=click.IntRange(1, 64), default=None, help="Interpreter threads.")(f)
    f = click.option("--runtime", type=RUNTIME_CHOICES, default="auto", show_default=True,
                     help="TFLite interpreter to use.")(f)
    return f


def top_k_option(default: int, help: str = "Predictions (or similar items) per result."):
    return click.option("-k", "--top-k", type=click.IntRange(1, 100), default=default, show_default=True, help=help)


def open_recognizer(bundle, runtime="auto", threads=None, delegate=(), top_k=5, search_k=0):
    from ..runtime.recognizer import Recognizer

    return Recognizer.create_from_bundle(bundle, runtime=runtime, threads=threads, delegates=tuple(delegate),
                                         top_k=top_k, search_k=search_k)


class ImageArgs:
    """The images named on the command line (files, folders, globs), read one at a time.

    An unreadable image is skipped with one line on stderr and counted; a single image that
    cannot be read is an error, reported before any bundle is opened.
    """

    def __init__(self, args: tuple[str, ...]) -> None:
        from shelfsight.images import expand_image_args

        self.paths = expand_image_args(args)
        self.skipped = 0
        self._first = self._read_only_one() if len(self.paths) == 1 else None

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self._first is not None:
            yield self.paths[0], self._first
            return
        from shelfsight.images import UnreadableImage, read_image

        for path in self.paths:
            try:
                frame = read_image(path)
            except (UnreadableImage, OSError) as e:
                self.skipped += 1
                click.echo(f"skipped {path}: {_reason(e)}", err=True)
                continue
            yield path, frame

    def report(self) -> None:
        """The count of skipped images on stderr; exit 1 when none could be read."""
        if self.skipped:
            click.echo(f"{self.skipped} of {len(self.paths)} images skipped", err=True)
            if self.skipped == len(self.paths):
                raise SystemExit(1)

    def _read_only_one(self) -> np.ndarray:
        from shelfsight.images import UnreadableImage, read_image

        try:
            return read_image(self.paths[0])
        except (UnreadableImage, OSError) as e:
            raise ConfigError(_reason(e)) from None


def _reason(e: Exception) -> str:
    return f"{e.filename}: {e.strerror or e}" if isinstance(e, OSError) and e.filename else str(e)
