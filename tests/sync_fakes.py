"""Helpers for the sync tests: small fake bundles, a loopback server, a test CA."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from shelfsight.bundle import new_manifest, write_manifest
from shelfsight.preprocess import PreprocessSpec
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server import Faults, ServerConfig, SyncServer

TOKEN = "test-token-0123"


def make_bundle(root: Path, labels: list[str], model_bytes: bytes, bundle_id: str | None = None) -> Path:
    """A small bundle whose model is arbitrary bytes (the health check is faked)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.tflite").write_bytes(model_bytes)
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    manifest = new_manifest(model={"file": "model.tflite", "quantization": "int8"},
                            labels={"file": "labels.txt", "count": len(labels)},
                            preprocess=PreprocessSpec().to_dict(), index=None)
    if bundle_id is not None:
        manifest["bundle_id"] = bundle_id
    write_manifest(root, manifest)
    return root


def server(tmp_path: Path, port: int | None = None, **kwargs) -> SyncServer:
    """A started server on ``port`` (default: a free one outside the ephemeral range)."""
    port = free_port() if port is None else port
    faults = kwargs.pop("faults", Faults())
    config = ServerConfig(data_dir=tmp_path / "server", token=TOKEN, port=port, faults=faults, seed=1, **kwargs)
    return SyncServer(config).start()


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path


def make_tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) PEM files for 127.0.0.1, made with cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shelfsight test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path
