"""Signed checkpoints: a rewrite by whoever can write the ledger file passes the chain check
but not a checkpoint kept elsewhere; honest appends still extend it; an inclusion proof is
checked by a few lines of standard library (plus the signature check) written here."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.ledger.checkpoint import (
    CheckpointError,
    current_checkpoint,
    generate_key,
    load_signing_key,
    load_verify_key,
    verify_against_checkpoint,
)
from workspace import write_workspace

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), catch_exceptions=False, env=env)


def rewrite(db: Path, seq: int, edit: Any) -> None:
    """The attack of issue 15, as the owner of the file can do it: drop the append-only
    triggers, edit event `seq`'s payload, recompute every hash from it on with the
    documented sha256-over-canonical-JSON rule, and move the chain head."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    rows = conn.execute(
        "SELECT seq, event_id, ts, kind, actor, payload, hash FROM events ORDER BY seq"
    ).fetchall()
    prev = "0" * 64
    for row_seq, event_id, ts, kind, actor, payload_text, stored in rows:
        payload = json.loads(payload_text)
        if row_seq == seq:
            payload = edit(payload)
        if row_seq >= seq:
            body = {
                "event_id": event_id,
                "ts": ts,
                "kind": kind,
                "actor": actor,
                "payload": payload,
                "prev_hash": prev,
            }
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            stored = hashlib.sha256(text.encode()).hexdigest()
            conn.execute(
                "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (
                    json.dumps(payload, sort_keys=True, separators=(",", ":")),
                    prev,
                    stored,
                    row_seq,
                ),
            )
        prev = stored
    conn.execute("UPDATE chain_head SET hash = ? WHERE id = 1", (prev,))
    conn.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    private, _public = generate_key(tmp_path / "keys" / "ledger.key")
    return private


def filled(folder: Path, n: int) -> Ledger:
    ledger = Ledger(folder / "hardenml.db")
    for i in range(n):
        ledger.append("test.event", {"i": i, "severity": "high"})
    return ledger


def test_keygen_writes_a_private_key_only_its_owner_reads(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in Path(f"{key_file}.pub").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        generate_key(key_file)


def test_an_earlier_checkpoint_is_accepted_after_honest_appends(
    tmp_path: Path, key_file: Path
) -> None:
    ledger = filled(tmp_path / "ws", 5)
    early = current_checkpoint(ledger, load_signing_key(key_file))
    for i in range(7):
        ledger.append("test.later", {"i": i})
    public_key = load_verify_key(Path(f"{key_file}.pub"))
    verdict = verify_against_checkpoint(ledger, early, public_key)
    assert verdict.ok, verdict.problems
    assert (verdict.checkpoint_size, verdict.ledger_size) == (5, 12)


@pytest.mark.parametrize(
    "forge",
    [
        lambda cp: {**cp, "root_hash": hashlib.sha256(b"forged").hexdigest()},
        lambda cp: {**cp, "tree_size": cp["tree_size"] - 1},
        lambda cp: {
            **cp,
            "signature": base64.b64encode(
                bytes([base64.b64decode(cp["signature"])[0] ^ 1])
                + base64.b64decode(cp["signature"])[1:]
            ).decode(),
        },
    ],
    ids=["root", "size", "signature"],
)
def test_a_tampered_checkpoint_is_refused(tmp_path: Path, key_file: Path, forge: Any) -> None:
    ledger = filled(tmp_path / "ws", 6)
    forged = forge(current_checkpoint(ledger, load_signing_key(key_file)))
    verdict = verify_against_checkpoint(ledger, forged, load_verify_key(key_file))
    assert not verdict.ok
    assert "signature does not verify" in verdict.problems[0]


def test_a_checkpoint_from_another_key_is_refused(tmp_path: Path, key_file: Path) -> None:
    ledger = filled(tmp_path / "ws", 3)
    other, _ = generate_key(tmp_path / "keys" / "other.key")
    signed = current_checkpoint(ledger, load_signing_key(other))
    verdict = verify_against_checkpoint(ledger, signed, load_verify_key(key_file))
    assert not verdict.ok and "signed by key" in verdict.problems[0]


def test_a_broken_chain_is_not_signed(tmp_path: Path, key_file: Path) -> None:
    ledger = filled(tmp_path / "ws", 3)
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")
    conn.close()
    with pytest.raises(CheckpointError, match="vouch for the damage"):
        current_checkpoint(ledger, load_signing_key(key_file))


def test_a_large_ledger_names_the_rewritten_block(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hardenml.ledger.checkpoint.MAX_BLOCKS", 4)
    ledger = filled(tmp_path / "ws", 20)  # blocks of 8 events
    signed = current_checkpoint(ledger, load_signing_key(key_file))
    assert signed["block_size"] == 8 and len(signed["block_roots"]) == 3
    rewrite(ledger.path, 11, lambda p: {**p, "severity": "low"})
    assert ledger.verify().ok
    verdict = verify_against_checkpoint(ledger, signed, load_verify_key(key_file))
    assert verdict.divergence is not None and verdict.divergence.seq == 9
    assert "#9..#16" in verdict.divergence.detail


# --- through the command line, on a scanned workspace ----------------------------------


@pytest.fixture
def scanned(tmp_path: Path, digits_weights: Path) -> Path:
    cfg = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.8, min_robust=0.9)
    assert run("scan", "--config", str(cfg)).exit_code == 0
    return cfg


def test_the_rewrite_passes_plain_verify_but_not_the_checkpoint(
    scanned: Path, key_file: Path, tmp_path: Path
) -> None:
    cfg, env = str(scanned), {"HARDENML_LEDGER_KEY": str(key_file)}
    checkpoint = tmp_path / "anchor" / "checkpoint.json"
    checkpoint.parent.mkdir()
    made = run("ledger", "checkpoint", "--config", cfg, "--output", str(checkpoint), env=env)
    assert made.exit_code == 0, made.output
    db = scanned.parent / "hardenml.db"
    opened = next(e for e in Ledger(db).events() if e.kind == "finding.opened")
    assert opened.payload["severity"] != "low"
    run("gate", "--config", cfg)  # an honest append after the checkpoint

    rewrite(db, opened.seq, lambda p: {**p, "severity": "low"})

    plain = run("ledger", "verify", "--config", cfg)
    assert plain.exit_code == 0 and "ledger ok" in plain.output
    assert "cannot detect a rewrite" in " ".join(plain.output.split())
    anchored = run("ledger", "verify", "--config", cfg, "--checkpoint", str(checkpoint), env=env)
    assert anchored.exit_code == 1, anchored.output
    assert "does not extend the checkpoint" in anchored.output
    assert f"event #{opened.seq} ({opened.event_id})" in anchored.output


def test_usage_errors_exit_2(scanned: Path, key_file: Path, tmp_path: Path) -> None:
    cfg = str(scanned)
    missing = run("ledger", "checkpoint", "--config", cfg, env={"HARDENML_LEDGER_KEY": ""})
    assert missing.exit_code == 2 and "HARDENML_LEDGER_KEY" in missing.output
    gone = run("ledger", "verify", "--config", cfg, "--checkpoint", str(tmp_path / "nope.json"))
    assert gone.exit_code == 2
    inside = run("ledger", "keygen", str(scanned.parent / "ledger.key"), "--config", cfg)
    assert inside.exit_code == 2 and "inside the workspace" in " ".join(inside.output.split())
    again = run("ledger", "keygen", str(key_file))
    assert again.exit_code == 2 and "already exists" in again.output


def independent_check(proof: dict[str, Any], public_pem: bytes) -> bool:
    """A third party's checker: RFC 9162 section 2.1.3.2 with hashlib, then the signature."""
    event = proof["event"]
    body = {k: event[k] for k in ("event_id", "ts", "kind", "actor", "payload", "prev_hash")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    r = hashlib.sha256(b"\x00" + hashlib.sha256(text.encode()).digest()).digest()
    fn, sn = proof["leaf_index"], proof["tree_size"] - 1
    for sibling in map(bytes.fromhex, proof["audit_path"]):
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + sibling + r).digest()
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + sibling).digest()
        fn, sn = fn >> 1, sn >> 1
    head = proof["checkpoint"]
    if sn != 0 or r.hex() != head["root_hash"] or head["tree_size"] != proof["tree_size"]:
        return False
    names = ("tree_size", "root_hash", "chain_head", "timestamp", "key_id")
    signed = "hardenml ledger checkpoint v1\n" + "".join(f"{n} {head[n]}\n" for n in names)
    try:
        load_pem_public_key(public_pem).verify(  # type: ignore[union-attr]
            base64.b64decode(head["signature"]), signed.encode()
        )
    except Exception:
        return False
    return True


def test_an_inclusion_proof_checks_out_with_the_standard_library(
    scanned: Path, key_file: Path
) -> None:
    cfg, env = str(scanned), {"HARDENML_LEDGER_KEY": str(key_file)}
    events = Ledger(scanned.parent / "hardenml.db").events()
    public_pem = Path(f"{key_file}.pub").read_bytes()
    for event in events:
        result = run("ledger", "prove", event.event_id, "--config", cfg, env=env)
        assert result.exit_code == 0, result.output
        proof = json.loads(result.output)
        assert proof["tree_size"] == len(events)
        assert independent_check(proof, public_pem)
        lied = {**proof, "event": {**proof["event"], "actor": "mallory"}}
        assert not independent_check(lied, public_pem)
    unknown = run("ledger", "prove", "no-such-event", "--config", cfg, env=env)
    assert unknown.exit_code == 2 and "no event" in unknown.output
