"""`shelfsight sync-keys`: make an Ed25519 key pair and sign bundle manifests.

Devices configured with the public key (`shelfsight sync --public-key`) install only
bundles whose manifest carries a valid signature from the private key.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import click

from shelfsight.bundle import MANIFEST
from shelfsight.edge.sync.signature import SIGNATURE_SUFFIX, generate_keypair, load_private_key, sign
from shelfsight.errors import BundleError


def signature_path(bundle: Path) -> Path:
    """Where the signature of a bundle lives: ``DIR/manifest.json.sig`` or ``ARCHIVE.sig``."""
    if bundle.is_dir():
        return bundle / (MANIFEST + SIGNATURE_SUFFIX)
    return bundle.with_name(bundle.name + SIGNATURE_SUFFIX)


def manifest_bytes(bundle: Path) -> bytes:
    """The exact manifest.json bytes of a bundle directory or .tar.gz."""
    if bundle.is_dir():
        path = bundle / MANIFEST
        if not path.is_file():
            raise BundleError(f"{bundle} is not a bundle: no {MANIFEST}")
        return path.read_bytes()
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise BundleError(f"{bundle}: {MANIFEST} is not a file")
            return member.read()
    except (tarfile.TarError, KeyError, OSError) as e:
        raise BundleError(f"{bundle}: no readable {MANIFEST} ({e})") from None


def sign_bundle(bundle: str | Path, private_key_path: str | Path) -> Path:
    """Write the signature file of a bundle; returns its path."""
    bundle = Path(bundle)
    target = signature_path(bundle)
    target.write_bytes(sign(manifest_bytes(bundle), load_private_key(private_key_path)))
    return target


@click.group("sync-keys")
def sync_keys() -> None:
    """Ed25519 keys for signed bundle updates."""


@sync_keys.command("generate")
@click.option("--private", "private_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (PEM, mode 0600); keep it off devices.")
@click.option("--public", "public_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the public key (PEM) that devices verify with.")
def generate(private_path: Path, public_path: Path) -> None:
    """Make a new key pair (never overwrites)."""
    generate_keypair(private_path, public_path)
    click.echo(f"wrote {private_path} and {public_path}")


@sync_keys.command("sign")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Private key (PEM) from `sync-keys generate`.")
def sign_command(bundle: Path, key: Path) -> None:
    """Sign BUNDLE (directory or .tar.gz): writes manifest.json.sig or ARCHIVE.sig."""
    click.echo(f"wrote {sign_bundle(bundle, key)}")
