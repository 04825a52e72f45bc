"""The device's own seal over state it writes into a bundle directory: the enrolment delta,
and the index spec of a rebuild done on the device.

The publisher's signature covers what the bundle ships; what the device adds later cannot
be signed by the publisher, so the device seals it with an HMAC-SHA256 under a key only it
holds. A file copied from another device, or packed into a repacked archive, does not carry
this device's seal and is refused.

The key is ``$SHELFSIGHT_DEVICE_KEY`` (its text), or else the file
``$XDG_CONFIG_HOME/shelfsight/device.key`` (default ``~/.config``), created on first use with
32 random bytes (hex) and mode 0600.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from shelfsight.errors import ConfigError

ENV = "SHELFSIGHT_DEVICE_KEY"


def key_path() -> Path:
    """Where the device key file is (whether or not it exists yet)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "shelfsight" / "device.key"


def device_key() -> bytes:
    """This device's sealing key (see module docstring), creating the key file if needed.

    Raises:
        ConfigError: the key file cannot be read or created, or is empty.
    """
    env = os.environ.get(ENV)
    if env:
        return env.encode()
    path = key_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"device key {path}: {getattr(e, 'strerror', None) or e}; set ${ENV} instead") from None
    if not key:
        raise ConfigError(f"device key {path} is empty; delete it to make a new one (device enrolments are lost)")
    return key.encode()


def seal(purpose: str, *parts: bytes) -> str:
    """The hex HMAC-SHA256 of ``parts`` under the device key, bound to ``purpose``."""
    mac = hmac.new(device_key(), purpose.encode() + b"\0", hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def is_sealed(mac: str, purpose: str, *parts: bytes) -> bool:
    """Whether ``mac`` is this device's seal over ``parts`` (constant-time comparison)."""
    return hmac.compare_digest(str(mac).encode(), seal(purpose, *parts).encode())


SEAL_KEY = "device_seal"  # where `seal_json` puts the seal inside a JSON object


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in obj.items() if k != SEAL_KEY}, sort_keys=True,
                      separators=(",", ":")).encode()


def seal_json(purpose: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` carrying this device's seal over its other keys."""
    return {**{k: v for k, v in obj.items() if k != SEAL_KEY}, SEAL_KEY: seal(purpose, _canonical(obj))}


def json_sealed(purpose: str, obj: Any) -> bool:
    """Whether ``obj`` (a dict from `seal_json`) carries this device's seal."""
    return isinstance(obj, dict) and isinstance(obj.get(SEAL_KEY), str) \
        and is_sealed(obj[SEAL_KEY], purpose, _canonical(obj))
