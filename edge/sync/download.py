"""Resumable HTTP downloads into a staging directory.

A file is written to ``NAME.part`` and renamed to ``NAME`` once complete. If the
connection breaks, the ``.part`` stays; the next attempt asks for the rest with an HTTP
``Range`` request and appends (a server that ignores the range gets a fresh start).
"""
from __future__ import annotations

import os
from pathlib import Path

import requests
import urllib3

from shelfsight.atomic import publish

from .http import SyncError, SyncSession

CHUNK = 256 * 1024
PART_SUFFIX = ".part"


class DownloadError(SyncError):
    """A download stopped early or the server answered something else than the file.
    What arrived is kept for resuming."""


def fetch_resumable(session: SyncSession, url: str, dest: Path, expected_size: int | None,
                    max_bytes: int) -> int:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part``.

    Args:
        expected_size: the size the file must have (from the manifest), or None if unknown.
        max_bytes: refuse to store more than this.

    Returns:
        How many bytes were transferred by this call (0 if ``dest`` was already complete).

    Raises:
        DownloadError: connection lost, unexpected status, or more bytes than expected.
    """
    dest = Path(dest)
    if dest.is_file() and (expected_size is None or dest.stat().st_size == expected_size):
        return 0
    part = dest.with_name(dest.name + PART_SUFFIX)
    offset = part.stat().st_size if part.is_file() else 0
    limit = max_bytes if expected_size is None else min(max_bytes, expected_size)
    if offset > limit:
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size:
        publish(part, dest)
        return 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.request("GET", url, headers=headers, stream=True) as response:
            if response.status_code == 416 and offset:
                part.unlink()
                raise DownloadError(f"GET {url}: server refused to resume at byte {offset}; starting over next time")
            if response.status_code == 206 and offset:
                expected_range = f"bytes {offset}-"
                if not response.headers.get("Content-Range", "").startswith(expected_range):
                    raise DownloadError(f"GET {url}: Content-Range {response.headers.get('Content-Range')!r}, "
                                        f"expected {expected_range}...")
                mode = "ab"
            elif response.status_code == 200:
                offset, mode = 0, "wb"
            else:
                raise DownloadError(f"GET {url}: HTTP {response.status_code}, expected 200 or 206")
            received = _write(response, part, mode, offset, limit, url)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise DownloadError(f"GET {url} interrupted: {type(e).__name__}; "
                            f"{part.stat().st_size if part.exists() else 0} bytes kept for resuming") from None
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(f"GET {url}: {size} of {expected_size} bytes arrived; will resume")
    publish(part, dest)
    return received


def _write(response: requests.Response, part: Path, mode: str, offset: int, limit: int, url: str) -> int:
    """Append the body to ``part`` as it arrives (``read1``: whatever bytes are there), so
    a connection lost mid-file keeps everything received before it."""
    encoding = response.headers.get("Content-Encoding", "identity")
    if encoding != "identity":
        raise DownloadError(f"GET {url}: Content-Encoding {encoding!r}, expected identity")
    received = 0
    with open(part, mode) as f:
        while chunk := response.raw.read1(CHUNK):
            received += len(chunk)
            if offset + received > limit:
                f.close()
                part.unlink()
                raise DownloadError(f"GET {url}: more than {limit} bytes; refusing it")
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return received
