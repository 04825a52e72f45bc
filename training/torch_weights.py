"""Read a PyTorch state dict into numpy arrays, without torch and without trusting the file.

A ``torch.save`` file is a pickle, and a plain ``pickle.load`` of a downloaded pickle runs
whatever code it names. This reader unpickles with an allow-list of the few globals a state
dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``, the storage
type names) and refuses any other global with a `ModelError` that names it.

Both container formats are read:

- legacy (torch < 1.6, ``_use_new_zipfile_serialization=False``): five pickles in a row
  (magic number, protocol version, system info, the object, the sorted storage keys), then
  each storage as an 8-byte little-endian element count followed by its raw bytes;
- zip (torch >= 1.6): ``<name>/data.pkl`` holds the object and ``<name>/data/<key>`` the raw
  bytes of each storage.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shelfsight.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage class name -> numpy dtype of one element (little-endian, as torch writes them).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 after reading
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends while unpickling."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    """A persistent reference to a storage that the pickle does not contain itself."""

    key: str
    storage_type: _StorageType
    numel: int
    offset: int = 0  # elements into the root storage (legacy storage views)


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` describes: a strided view of a storage."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_ignored: Any) -> _TensorRef:
    """Safe stand-in for torch._utils._rebuild_tensor(_v2): records, never executes."""
    if not isinstance(storage, _StorageRef):
        raise ModelError(f"tensor refers to {type(storage).__name__}, expected a storage reference")
    try:
        shape = tuple(int(v) for v in size)
        strides = tuple(int(v) for v in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"tensor has malformed size/stride/offset {size!r}/{stride!r}/"
                         f"{storage_offset!r}") from exc
    if len(shape) != len(strides) or min(shape + strides + (offset,), default=0) < 0:
        raise ModelError(f"tensor has inconsistent size {shape} and stride {strides}")
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       *_ignored: Any) -> Any:
    """Safe stand-in for torch._utils._rebuild_parameter: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise ModelError(f"parameter wraps {type(data).__name__}, expected a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a state dict needs."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS
                                if not n.endswith("Storage"))
            raise ModelError(
                f"refused global {module}.{name} in {self._source}: a state dict may only use "
                f"{allowed} and torch.*Storage") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: the first five.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ModelError(f"unsupported persistent id {pid!r:.80} in {self._source}, "
                             "expected a ('storage', <torch.*Storage>, key, location, size) tuple")
        _, storage_type, key, _location, numel, *view = pid
        view_metadata = view[0] if view else None
        if view_metadata is None:
            return _StorageRef(str(key), storage_type, int(numel))
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(str(key), storage_type, int(view_numel), int(view_offset))


def _unpickle(file: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except ModelError:
        raise
    except Exception as exc:  # truncated or corrupt pickle stream
        raise ModelError(f"cannot read {source}: corrupt or truncated pickle ({exc})") from exc


def _as_state_dict(obj: Any, source: str) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict):
        raise ModelError(f"{source} holds a {type(obj).__name__}, expected a state dict "
                         "(a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, _TensorRef))]
    if bad:
        raise ModelError(f"{source} is not a plain state dict: entry {bad[0]!r} is not a "
                         "name -> tensor pair")
    return obj


def _read_legacy(file: BinaryIO, source: str) -> tuple[dict[str, _TensorRef], dict[str, bytes]]:
    magic = _unpickle(file, source)
    if magic != LEGACY_MAGIC:
        raise ModelError(f"{source} is not a PyTorch file (magic number {magic!r})")
    protocol = _unpickle(file, source)
    if protocol != LEGACY_PROTOCOL:
        raise ModelError(f"{source} uses legacy protocol {protocol}, expected {LEGACY_PROTOCOL}")
    sys_info = _unpickle(file, source)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise ModelError(f"{source} was saved on a big-endian machine, which is not supported")
    state = _as_state_dict(_unpickle(file, source), source)
    keys = _unpickle(file, source)
    sizes = {t.storage.key: t.storage.storage_type.dtype.itemsize for t in state.values()}
    raw: dict[str, bytes] = {}
    if not (isinstance(keys, list) and set(keys) == set(sizes)):
        raise ModelError(f"{source}: the storage key list does not match the tensors' storages")
    for key in keys:
        header = file.read(8)
        numel = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
        nbytes = numel * sizes[key]
        data = file.read(nbytes) if numel >= 0 else b""
        if numel < 0 or len(data) != nbytes:
            raise ModelError(f"{source} is truncated: storage {key} is incomplete")
        raw[key] = data
    return state, raw


def _read_zip(path: Path, source: str) -> tuple[dict[str, _TensorRef], dict[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ModelError(f"{source} is a zip without exactly one <name>/data.pkl")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = (archive.read(prefix + "byteorder").decode().strip()
                         if prefix + "byteorder" in names else "little")
            if byteorder != "little":
                raise ModelError(f"{source} was saved with {byteorder}-endian storages, "
                                 "expected little")
            with archive.open(pickles[0]) as handle:
                state = _as_state_dict(_unpickle(io.BytesIO(handle.read()), source), source)
            raw = {}
            for key in {t.storage.key for t in state.values()}:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ModelError(f"{source} lacks storage {member}")
                raw[key] = archive.read(member)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"cannot read {source}: corrupt zip ({exc})") from exc
    return state, raw


def _materialise(name: str, ref: _TensorRef, raw: dict[str, bytes], source: str) -> np.ndarray:
    dtype = ref.storage.storage_type.dtype
    data = raw.get(ref.storage.key)
    if data is None:
        raise ModelError(f"{source}: tensor {name} refers to missing storage {ref.storage.key}")
    storage = np.frombuffer(data, dtype=dtype)
    start = ref.storage.offset + ref.offset
    extent = 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) if all(ref.shape) else 0
    if start + extent > storage.size:
        raise ModelError(f"{source}: tensor {name} of shape {ref.shape} overruns its storage "
                         f"({start + extent} > {storage.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        storage[start:], shape=ref.shape, strides=tuple(s * dtype.itemsize for s in ref.stride),
        writeable=False)
    array = np.array(view, dtype=dtype.newbyteorder("="))
    if ref.storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def load_torch_state_dict(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file without torch and without executing its pickle.

    Args:
        path: a ``torch.save`` file of a state dict, legacy or zip format.
    Returns:
        parameter name -> numpy array (a copy), in file order.
    Raises:
        ModelError: the file is missing, corrupt, truncated, not a state dict, or its pickle
            names a global outside the allow-list (the message names the refused global).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ModelError(f"weights file {source} does not exist")
    if zipfile.is_zipfile(path):
        state, raw = _read_zip(path, source)
    else:
        with path.open("rb") as file:
            state, raw = _read_legacy(file, source)
    return {name: _materialise(name, ref, raw, source) for name, ref in state.items()}
