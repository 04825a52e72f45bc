"""One way to open "a run or a bundle": what `eval` (and anything else that takes either) reads.

A bundle is a directory with manifest.json or a .tar.gz/.tgz archive of one (verified by
`bundle.load_bundle`); a training run is a directory with the Keras model (read by
`run.Run.load`). Telling them apart needs neither TensorFlow nor a TFLite runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .bundle import ARCHIVE_SUFFIXES, MANIFEST, Bundle, load_bundle
from .errors import ModelError
from .preprocess import PreprocessSpec
from .run import MODEL_FILE as RUN_MODEL_FILE, Run, is_run


def is_bundle(path: str | Path) -> bool:
    """A bundle directory (with manifest.json), or the name of a bundle archive."""
    p = Path(path)
    return (p.is_dir() and (p / MANIFEST).is_file()) or (p.name.endswith(ARCHIVE_SUFFIXES) and not p.is_dir())


@dataclass(frozen=True)
class Target:
    """A trained model: its labels, preprocessing and kind ("bundle" or "run").

    Exactly one of ``bundle`` (verified, for the TFLite runtime) and ``run`` (for Keras) is set.
    """

    path: Path
    kind: str
    labels: tuple[str, ...]
    spec: PreprocessSpec
    bundle: Bundle | None = None
    run: Run | None = None


def open_target(path: str | Path) -> Target:
    """Open a bundle (directory or archive) or a training run.

    Raises:
        BundleError: a bundle that does not verify.
        ModelError: neither a bundle nor a complete training run.
    """
    p = Path(path)
    if is_bundle(p):
        b = load_bundle(p)
        return Target(b.root, "bundle", b.labels, b.preprocess, bundle=b)
    if is_run(p):
        r = Run.load(p)
        return Target(p, "run", r.labels, r.preprocess, run=r)
    raise ModelError(f"{p}: neither a bundle ({MANIFEST}) nor a training run ({RUN_MODEL_FILE})")
