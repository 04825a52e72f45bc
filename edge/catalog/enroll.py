"""The enrolment delta: items added on the device, searched exactly beside the Annoy index.

The Annoy file is immutable; a product enrolled on the device goes into a small delta
(``enrolled.npz``: unit vectors, which enrolment each belongs to, and a JSON header with
the item records, the model sha256 and the dimension). Every change rewrites the one file
atomically (`shelfsight.atomic`), so a crash leaves the old delta or the new
one, never a mix. Each enrolment has a sequence number; a rebuild that folds the delta
into a new index records the last number it folded (``folded_through`` in the index
spec), and entries up to it are ignored from then on, even if the pruned delta was never
written. The delta is device state: it is not listed in the bundle manifest (a rebuild on
the device must not invalidate a signed manifest). Instead the device seals it with its own
key (`seal`): a delta this device did not write (copied in, or packed into a repacked bundle
archive) is refused.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shelfsight.atomic import DEVICE_DATA_MODE, write_with
from shelfsight.errors import ConfigError, IndexMismatchError

from .items import CatalogItem
from .seal import is_sealed, seal

FORMAT, VERSION = "shelfsight.enrolled", 1
_PURPOSE = FORMAT  # what the device seal of a delta is bound to


@dataclass(frozen=True, eq=False)
class Enrolment:
    """One enrolment: an item and the unit vectors (n, D) of its photos."""

    seq: int
    item: CatalogItem
    vectors: np.ndarray


@dataclass(frozen=True)
class EnrolledDelta:
    """All enrolments not yet folded into the index, oldest first (immutable)."""

    model_sha256: str
    dimension: int
    entries: tuple[Enrolment, ...] = ()
    #: all vectors (M, D) and the item_id of each row, derived from ``entries``
    matrix: np.ndarray = field(init=False, repr=False, compare=False)
    item_of_row: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _items: dict[str, CatalogItem] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vectors = [e.vectors for e in self.entries]
        matrix = np.concatenate(vectors) if vectors else np.empty((0, self.dimension), np.float32)
        item_of_row = tuple(e.item.item_id for e in self.entries for _ in range(len(e.vectors)))
        object.__setattr__(self, "matrix", np.ascontiguousarray(matrix, dtype=np.float32))
        object.__setattr__(self, "item_of_row", item_of_row)
        items: dict[str, CatalogItem] = {}
        for e in self.entries:
            items.setdefault(e.item.item_id, e.item)
        object.__setattr__(self, "_items", items)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq if self.entries else 0

    def items(self) -> dict[str, CatalogItem]:
        """Enrolled items by id, in first-enrolment order."""
        return dict(self._items)

    def item(self, item_id: str) -> CatalogItem | None:
        """The enrolled item with this id, or None."""
        return self._items.get(item_id)

    def added(self, item: CatalogItem, unit_vectors: np.ndarray, after_seq: int = 0) -> "EnrolledDelta":
        """A new delta with one more enrolment, numbered after both this delta's last
        enrolment and ``after_seq`` (the index's ``folded_through``)."""
        seq = max(self.last_seq, after_seq) + 1
        entry = Enrolment(seq, item, np.ascontiguousarray(unit_vectors, dtype=np.float32))
        return EnrolledDelta(self.model_sha256, self.dimension, (*self.entries, entry))

    def after(self, seq: int) -> "EnrolledDelta":
        """The enrolments numbered above ``seq`` (those not yet folded into the index)."""
        return EnrolledDelta(self.model_sha256, self.dimension, tuple(e for e in self.entries if e.seq > seq))

    def save(self, path: Path) -> None:
        """Write the delta atomically, readable by its owner only; an empty delta removes the file."""
        path = Path(path)
        if not self.entries:
            path.unlink(missing_ok=True)
            return
        header = {"format": FORMAT, "version": VERSION, "model_sha256": self.model_sha256,
                  "dimension": self.dimension,
                  "entries": [{"seq": e.seq, "item": e.item.to_dict(), "vectors": len(e.vectors)}
                              for e in self.entries]}
        text = json.dumps(header)
        mac = seal(_PURPOSE, text.encode(), self.matrix.tobytes())
        write_with(path, lambda f: np.savez(f, header=np.asarray(text), vectors=self.matrix, seal=np.asarray(mac)),
                   mode=DEVICE_DATA_MODE)

    @classmethod
    def load(cls, path: Path) -> "EnrolledDelta | None":
        """Read a delta written by `save`; None when there is no file.

        Raises:
            IndexMismatchError: the file exists but is not a readable delta, or does not carry
                this device's seal.
        """
        path = Path(path)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                text, matrix = str(z["header"]), np.asarray(z["vectors"], dtype=np.float32)
                mac = str(z["seal"]) if "seal" in z.files else ""
            sealed = is_sealed(mac, _PURPOSE, text.encode(), np.ascontiguousarray(matrix).tobytes())
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise IndexMismatchError(f"{path}: enrolled items are not readable ({type(e).__name__}: {e}); "
                                     f"move the file away to start without them") from None
        if not sealed:
            raise IndexMismatchError(f"{path}: enrolled items not sealed by this device (copied from elsewhere "
                                     f"or altered); move the file away to start without them")
        try:
            header = json.loads(text)
            if header.get("format") != FORMAT or header.get("version") != VERSION:
                raise ValueError(f"format {header.get('format')!r} version {header.get('version')}, "
                                 f"expected {FORMAT!r} {VERSION}")
            dimension = int(header["dimension"])
            counts = [int(e["vectors"]) for e in header["entries"]]
            if matrix.shape != (sum(counts), dimension):
                raise ValueError(f"vectors of shape {matrix.shape}, header says ({sum(counts)}, {dimension})")
            bounds = np.cumsum([0, *counts])
            entries = tuple(Enrolment(int(e["seq"]), CatalogItem.from_dict(e["item"]), matrix[a:b])
                            for e, a, b in zip(header["entries"], bounds[:-1], bounds[1:]))
            return cls(str(header["model_sha256"]), dimension, entries)
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile,
                ConfigError) as e:
            raise IndexMismatchError(f"{path}: enrolled items are not readable ({type(e).__name__}: {e}); "
                                     f"move the file away to start without them") from None
