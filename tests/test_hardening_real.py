"""Issue 14 on a real int8 bundle with its search index: an update from a directory offer and
from an archive offer installs it (the real health check), and `shelfsight search` answers
from the installed version; the repacked archive is refused by `search` in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from shelfsight.bundle import pack_archive
from shelfsight.edge.sync.bundle_store import BundleStore
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.updates import UpdateOptions, Updater

from sync_fakes import server, token_file
from test_hardening_index import attack

pytestmark = pytest.mark.slow


def shelfsight(*args):
    return subprocess.run([sys.executable, "-m", "shelfsight", "-q", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def indexed(bundle_copy, sample_data):
    from shelfsight.edge.indexing import build_index

    build_index(bundle_copy, sample_data, progress=False)
    return bundle_copy


def test_update_then_search_from_directory_and_archive_offers(indexed, sample_data, tmp_path, monkeypatch):
    banana = sample_data / "iconic-images-and-descriptions" / "Fruit" / "Banana" / "Banana_Iconic.jpg"
    for offer in ("directory", "archive"):
        bundle = indexed if offer == "directory" else pack_archive(indexed, tmp_path / "bundle.tar.gz")
        srv = server(tmp_path / offer, bundle=bundle)
        try:
            http = HttpOptions(token_file=token_file(tmp_path), connect_timeout_s=1.0, read_timeout_s=30.0)
            up = Updater(BundleStore(tmp_path / offer / "device"),
                         UpdateOptions(manifest_url=srv.url + "/v1/manifest", http=http))  # real health check
            result = up.check_once()
            assert result.status == "updated", result.reason
            found = shelfsight("search", str(up.store.current), str(banana), "-k", "1")
            assert found.returncode == 0, found.stderr
            assert found.stdout.split()[1] == "Banana"
        finally:
            srv.stop()
    bad = attack(indexed, tmp_path / "bad.tar.gz", monkeypatch, rewrite_index=False)
    refused = shelfsight("search", str(bad), str(banana))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if not line.startswith("INFO: ")]  # LiteRT's own
    assert len(errors) == 1 and errors[0].startswith("error: ") and "not sealed by this device" in errors[0]
