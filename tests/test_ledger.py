"""The ledger: append-only, hash-chained, tamper-evident, safe under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from itertools import pairwise
from pathlib import Path

import pytest

from hardenml.ledger import GENESIS, ChainHead, Ledger, LedgerError, LedgerTamperedError


def filled(tmp_path: Path, n: int = 5) -> Ledger:
    ledger = Ledger(tmp_path / "hardenml.db")
    for i in range(n):
        ledger.append("test.event", {"i": i, "note": f"event {i}"})
    return ledger


def raw(ledger: Ledger) -> sqlite3.Connection:
    """A tamperer's connection: drops the append-only triggers first."""
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("DROP TRIGGER events_append_only_delete")
    return conn


def test_chain_links_every_event(tmp_path: Path):
    ledger = filled(tmp_path)
    events = ledger.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == GENESIS
    for before, after in pairwise(events):
        assert after.prev_hash == before.hash
    assert all(e.hash == e.expected_hash() for e in events)
    report = ledger.verify()
    assert report.ok and report.events == 5 and report.head_hash == events[-1].hash


def test_update_and_delete_are_refused(tmp_path: Path):
    ledger = filled(tmp_path)
    conn = sqlite3.connect(ledger.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET kind = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = 2")


def test_edited_event_is_named(tmp_path: Path):
    ledger = filled(tmp_path)
    victim = ledger.events()[2]
    payload = json.dumps({"i": 2, "note": "rewritten"}, separators=(",", ":"), sort_keys=True)
    raw(ledger).execute("UPDATE events SET payload = ? WHERE seq = 3", (payload,))
    report = ledger.verify()
    assert not report.ok
    (problem,) = report.problems
    assert problem.seq == 3 and problem.event_id == victim.event_id
    assert "edited" in problem.problem


def test_deleted_event_is_named(tmp_path: Path):
    ledger = filled(tmp_path)
    raw(ledger).execute("DELETE FROM events WHERE seq = 2")
    report = ledger.verify()
    assert not report.ok
    assert any(p.seq == 3 and "#2..#2 are missing" in p.problem for p in report.problems)


def test_deleted_tail_is_caught_by_the_head(tmp_path: Path):
    ledger = filled(tmp_path)
    raw(ledger).execute("DELETE FROM events WHERE seq = 5")
    report = ledger.verify()
    assert [p.problem.split(":")[0] for p in report.problems] == ["deleted at the end"]


def test_reordered_events_are_named(tmp_path: Path):
    ledger = filled(tmp_path)
    conn = raw(ledger)
    # Swap rows 2 and 4 whole (content and hashes), keeping the positions.
    cols = "event_id, ts, kind, actor, payload, prev_hash, hash"
    two = conn.execute(f"SELECT {cols} FROM events WHERE seq = 2").fetchone()
    four = conn.execute(f"SELECT {cols} FROM events WHERE seq = 4").fetchone()
    conn.execute("UPDATE events SET event_id = 'tmp' WHERE seq = 2")
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE events SET {sets} WHERE seq = 4", two)
    conn.execute(f"UPDATE events SET {sets} WHERE seq = 2", four)
    report = ledger.verify()
    reordered = [p for p in report.problems if p.problem.startswith("reordered")]
    assert {p.seq for p in reordered} >= {2, 4}
    assert not any(p.problem.startswith("edited") for p in report.problems)


def test_writes_refused_on_a_broken_chain(tmp_path: Path):
    ledger = filled(tmp_path)
    raw(ledger).execute("DELETE FROM events WHERE seq = 5")
    with pytest.raises(LedgerError, match="ledger verify"):
        ledger.append("test.event", {"i": 99})
    assert ledger.verify().events == 4  # nothing was added on top


def test_failed_group_writes_nothing(tmp_path: Path):
    ledger = filled(tmp_path, 2)
    with pytest.raises(ValueError):
        ledger.append_many([("ok", {"a": 1}), ("bad", {"nan": float("nan")})])
    assert len(ledger.events()) == 2 and ledger.verify().ok


def _writer(path: str, worker: int, count: int) -> None:
    ledger = Ledger(Path(path))
    for i in range(count):
        ledger.append_many(
            [("run.completed", {"w": worker, "i": i}), ("finding.opened", {"w": worker, "i": i})]
        )


def test_concurrent_writers_keep_one_chain(tmp_path: Path):
    path = tmp_path / "hardenml.db"
    Ledger(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)  # generous: the machine may be shared; the chain check is the test
        assert p.exitcode == 0
    ledger = Ledger(path)
    events = ledger.events()
    assert len(events) == 3 * 15 * 2
    assert ledger.verify().ok
    # Each writer's pair stayed adjacent: groups are atomic.
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert (first.kind, second.kind) == ("run.completed", "finding.opened")
        assert first.payload == second.payload


def test_typed_payloads_round_trip_and_keep_unknown_keys() -> None:
    from hardenml.records import GateDecided, Measurement, RunCompleted

    m = Measurement("robust_accuracy", "pgd", 0.1, 0.5, 0.4, 0.6, 0.95, 100, 7)
    run = RunCompleted(
        run_id="r1",
        model="m",
        model_sha256="a" * 64,
        data_sha256="b" * 64,
        seed=7,
        n=100,
        measurements=[m],
        scan={"sequential": False},
        extra={"calibration": {"clean": {"ece": 0.1}}},
    )
    payload = run.to_payload()
    assert payload["measurements"][0]["threat"] == "pgd"
    assert payload["calibration"] == {"clean": {"ece": 0.1}}
    assert RunCompleted.from_payload(payload) == run
    gate = GateDecided("r1", "m", "a" * 64, "fail", 1, ["x"], [], ["HML-1"], [], "g.json")
    assert GateDecided.from_payload({**gate.to_payload(), "new_key": 1}).extra == {"new_key": 1}


def test_reads_refuse_a_broken_chain_and_name_the_event(tmp_path: Path):
    ledger = filled(tmp_path)
    head = ledger.verify().head
    assert ledger.verified() == (ledger.events(), head)
    assert head.events == 5 and head.hash == ledger.events()[-1].hash
    payload = json.dumps({"i": 2, "note": "rewritten"}, separators=(",", ":"), sort_keys=True)
    raw(ledger).execute("UPDATE events SET payload = ? WHERE seq = 3", (payload,))
    for read in (ledger.events, ledger.verified, lambda: Ledger(ledger.path).events(["x"])):
        with pytest.raises(LedgerTamperedError, match=r"event #3 .*edited") as info:
            read()
        assert str(ledger.path) in str(info.value) and "ledger verify" in str(info.value)
        assert [p.seq for p in info.value.report.problems] == [3]
    assert not ledger.verify().ok  # verify still reports instead of raising


def test_a_missing_ledger_reads_as_empty_and_the_first_write_creates_it(tmp_path: Path):
    path = tmp_path / "sub" / "hardenml.db"
    ledger = Ledger(path)
    assert ledger.events() == [] and ledger.verify().ok
    assert ledger.verified()[1] == ChainHead(0, GENESIS)
    assert not path.parent.exists(), "reading must not create the ledger (or its folder)"
    ledger.append("test.event", {"i": 0})
    assert [e.kind for e in Ledger(path).events()] == ["test.event"]
    # Created whole, in one step: nothing half-made is left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["hardenml.db"]


def _other_sqlite(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda good, tmp: b"", "is empty (0 bytes)"),
        (lambda good, tmp: bytes(range(256)) * 32, "is not an SQLite database"),
        (lambda good, tmp: b"just some notes\n", "is not an SQLite database"),
        (lambda good, tmp: good[: len(good) // 2], "malformed"),
        (lambda good, tmp: good[:100], "malformed"),
        (lambda good, tmp: _other_sqlite(tmp / "other.db"), "without a ledger's tables"),
    ],
    ids=["zero-bytes", "random-bytes", "text", "truncated-half", "truncated-header", "other-db"],
)
def test_a_file_that_is_no_ledger_is_refused_naming_it_and_the_fix(
    tmp_path: Path, damage, message: str
):
    ledger = filled(tmp_path, 40)
    good = ledger.path.read_bytes()
    bad = damage(good, tmp_path)
    ledger.path.write_bytes(bad)
    with pytest.raises(LedgerError) as info:
        opened = Ledger(ledger.path)  # the check at opening catches most
        opened.verify()
        opened.events()
        opened.append("test.event", {"i": 99})
    text = str(info.value)
    assert message in text and str(ledger.path) in text and "backup" in text
    assert not isinstance(info.value, LedgerTamperedError)
    assert ledger.path.read_bytes() == bad, "a damaged ledger is evidence: never rewritten"


def test_bytes_that_are_not_utf8_read_as_an_edited_event(tmp_path: Path):
    """Flipped bytes can leave a text column that is not UTF-8 at all: named as edited,
    not a decoding crash."""
    ledger = filled(tmp_path)
    raw(ledger).execute("UPDATE events SET payload = CAST(x'7b2280ff22' AS TEXT) WHERE seq = 2")
    (problem,) = ledger.verify().problems
    assert problem.seq == 2 and "edited" in problem.problem
    with pytest.raises(LedgerTamperedError):
        ledger.events()
