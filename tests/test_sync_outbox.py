"""The durable outbox: idempotent put, claim/ack, bounds and drop policies, restarts."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from shelfsight.edge.sync.outbox import Outbox, OutboxError, OutboxOptions, OutboxSink
from shelfsight.edge.pipeline.sinks import Sink
from shelfsight.errors import ConfigError


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ev(i: int, pad: int = 0) -> dict:
    return {"id": f"e{i:04d}", "n": i, "pad": "x" * pad}


def test_put_claim_ack_in_order(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        assert box.put_many([ev(i) for i in range(5)]) == 5
        batch = box.claim(max_events=3)
        assert batch.ids == ("e0000", "e0001", "e0002")
        assert batch.events[1] == ev(1)
        second = box.claim(max_events=10)
        assert second.ids == ("e0003", "e0004")  # claimed ones are skipped
        assert box.ack(["e0000", "e0002"]) == 2
        box.release(batch)
        box.release(second)
        assert box.claim(max_events=10).ids == ("e0001", "e0003", "e0004")
        stats = box.stats()
        assert (stats.pending, stats.counters["enqueued"], stats.counters["acked"]) == (3, 5, 2)


def test_claim_respects_byte_limit_but_returns_at_least_one(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        box.put_many([ev(0, pad=500), ev(1, pad=500), ev(2)])
        assert box.claim(max_events=10, max_bytes=100).ids == ("e0000",)
        assert box.claim(max_events=10, max_bytes=540).ids == ("e0001",)
        assert box.claim(max_events=10, max_bytes=540).ids == ("e0002",)


def test_same_id_twice_is_stored_once(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        assert box.put(ev(1)) and box.put(ev(1))
        assert box.stats().pending == 1
        assert box.counters()["duplicate"] == 1


def test_events_survive_reopen_and_claims_do_not(tmp_path):
    box = Outbox(tmp_path / "o.db")
    box.put_many([ev(i) for i in range(3)])
    assert len(box.claim(max_events=2)) == 2
    box.close()
    box.close()  # idempotent
    with Outbox(tmp_path / "o.db") as again:  # a crash loses the claim, never the event
        assert again.claim(max_events=10).ids == ("e0000", "e0001", "e0002")
        assert again.counters()["enqueued"] == 3


def test_oldest_policy_drops_oldest_and_counts(tmp_path):
    with Outbox(tmp_path / "o.db", OutboxOptions(max_events=3)) as box:
        assert box.put_many([ev(i) for i in range(5)]) == 5
        assert box.claim(max_events=10).ids == ("e0002", "e0003", "e0004")
        assert box.counters()["dropped_oldest"] == 2


def test_refuse_new_policy_keeps_old_and_counts(tmp_path):
    with Outbox(tmp_path / "o.db", OutboxOptions(max_events=3, drop_policy="refuse-new")) as box:
        assert box.put_many([ev(i) for i in range(5)]) == 3
        assert box.put(ev(9)) is False
        assert box.claim(max_events=10).ids == ("e0000", "e0001", "e0002")
        assert box.counters()["refused"] == 3


def test_byte_bound(tmp_path):
    with Outbox(tmp_path / "o.db", OutboxOptions(max_bytes=250)) as box:
        for i in range(4):
            box.put(ev(i, pad=60))  # ~85 bytes each: two fit
        assert box.stats().pending == 2 and box.stats().pending_bytes <= 250
        assert box.counters()["dropped_oldest"] == 2
        assert box.put(ev(9, pad=400)) is False  # larger than the whole outbox
        assert box.counters()["refused"] == 1


def test_age_bound_with_fake_clock(tmp_path):
    clock = FakeClock()
    with Outbox(tmp_path / "o.db", OutboxOptions(max_age_s=60), clock=clock) as box:
        box.put(ev(0))
        clock.t += 30
        box.put(ev(1))
        clock.t += 45  # e0 is 75 s old, e1 45 s
        assert box.claim().ids == ("e0001",)
        assert box.counters()["expired"] == 1


def test_counters_persist_across_restart(tmp_path):
    options = OutboxOptions(max_events=1)
    with Outbox(tmp_path / "o.db", options) as box:
        box.put_many([ev(0), ev(1)])
    with Outbox(tmp_path / "o.db", options) as box:
        assert box.counters()["dropped_oldest"] == 1 and box.counters()["enqueued"] == 2


def test_reject_moves_to_dead_letters(tmp_path):
    with Outbox(tmp_path / "o.db", OutboxOptions(max_dead=1)) as box:
        box.put_many([ev(0), ev(1), ev(2)])
        box.release(box.claim())
        assert box.reject({"e0000": "bad", "e0001": "worse", "nope": "x"}) == 2
        assert box.dead_letters() == [("e0001", "worse")]  # bounded: oldest dead letter gone
        assert box.claim().ids == ("e0002",)
        assert box.counters()["rejected"] == 2


@pytest.mark.parametrize("event, match", [
    ({"n": 1}, "event id must be a non-empty string"),
    ({"id": ""}, "event id must be a non-empty string"),
    ({"id": "a", "x": float("nan")}, "not JSON-serialisable"),
    (["id", "a"], "must be a dict, got list"),
])
def test_unstorable_events_raise(tmp_path, event, match):
    with Outbox(tmp_path / "o.db") as box:
        with pytest.raises(OutboxError, match=match):
            box.put(event)
        assert box.stats().pending == 0


def test_options_are_checked():
    with pytest.raises(ConfigError, match="drop policy 'newest' unknown"):
        OutboxOptions(drop_policy="newest")
    with pytest.raises(ConfigError, match="outbox bounds must be positive, got max_events 0"):
        OutboxOptions(max_events=0)
    with pytest.raises(ConfigError, match="max_age_s must be > 0 or None, got -1"):
        OutboxOptions(max_age_s=-1)


def test_not_a_database(tmp_path):
    bad = tmp_path / "o.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="not a usable SQLite database"):
        Outbox(bad)


def test_closed_outbox_refuses(tmp_path):
    box = Outbox(tmp_path / "o.db")
    box.close()
    with pytest.raises(OutboxError, match="is closed"):
        box.put(ev(0))


def test_wal_mode_and_totals_match_rows(tmp_path):
    with Outbox(tmp_path / "o.db", OutboxOptions(max_events=50)) as box:
        box.put_many([ev(i, pad=i) for i in range(80)])
        box.ack([f"e{i:04d}" for i in range(30, 40)])
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    count, nbytes = db.execute("SELECT COUNT(*), SUM(size) FROM events").fetchone()
    assert db.execute("SELECT count, bytes FROM totals").fetchone() == (count, nbytes) == (40, nbytes)


def test_producer_and_sender_threads_lose_nothing(tmp_path):
    box = Outbox(tmp_path / "o.db", OutboxOptions(durable=False))
    acked: list[str] = []
    done = threading.Event()

    def produce():
        for i in range(1000):
            box.put(ev(i))
        done.set()

    def send():
        while not (done.is_set() and box.stats().pending == 0):
            batch = box.claim(max_events=37)
            box.ack(batch.ids)
            acked.extend(batch.ids)

    threads = [threading.Thread(target=produce), threading.Thread(target=send)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    box.close()
    assert acked == [f"e{i:04d}" for i in range(1000)]


def test_outbox_sink_is_a_sink(tmp_path):
    box = Outbox(tmp_path / "o.db")
    sink = OutboxSink(box)
    assert isinstance(sink, Sink)
    sink.emit(ev(3))
    sink.flush()
    assert box.claim().events == (ev(3),)
    sink.close()
    sink.close()
    with pytest.raises(OutboxError, match="is closed"):
        box.put(ev(4))
