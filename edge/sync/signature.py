"""Ed25519 signatures over bundle manifest bytes.

The publisher signs the exact bytes of ``manifest.json``; since the manifest holds the
sha256 of every file, the signature covers the whole bundle. A signature file is one
line: the 64-byte signature in base64. Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo
public), as written by `generate_keypair`.

Uses the ``cryptography`` package, imported only when a signature is made or checked.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from shelfsight.errors import BundleError, ConfigError, RuntimeUnavailableError

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_BYTES = 64


class SignatureError(BundleError):
    """A manifest signature is missing, malformed or does not verify."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise RuntimeUnavailableError(
            "signed bundles need the 'cryptography' package (pip install 'shelfsight[sync]')") from None
    return serialization, ed25519, InvalidSignature


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file. Raises ConfigError if it is not one."""
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as e:
        raise ConfigError(f"public key {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"public key {path}: not a PEM public key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"public key {path}: {type(key).__name__}, expected an Ed25519 key")
    return key


def load_private_key(path: str | Path):
    """An Ed25519 private key from an unencrypted PEM file. Raises ConfigError otherwise."""
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"signing key {path}: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"signing key {path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key {path}: {type(key).__name__}, expected an Ed25519 key")
    return key


def generate_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair (private key file mode 0600). Refuses to overwrite."""
    serialization, ed25519, _ = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(data: bytes, private_key) -> bytes:
    """The signature file content (base64 line) for ``data``."""
    return base64.b64encode(private_key.sign(data)) + b"\n"


def decode_signature(text: bytes) -> bytes:
    """The raw 64 bytes of a signature file. Raises SignatureError if malformed."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("manifest signature is not base64") from None
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureError(f"manifest signature is {len(raw)} bytes, expected {SIGNATURE_BYTES}")
    return raw


def verify(data: bytes, signature_file: bytes, public_key) -> None:
    """Check a signature file against ``data``. Raises SignatureError if it does not verify."""
    _, _, invalid = _crypto()
    try:
        public_key.verify(decode_signature(signature_file), data)
    except invalid:
        raise SignatureError("manifest signature does not verify with the configured public key") from None
