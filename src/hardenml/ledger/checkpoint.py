"""Signed checkpoints: the ledger's Merkle root, signed with a key kept outside the workspace.

A hash chain kept only inside the file it protects proves nothing against whoever can write
that file: drop the append-only triggers, edit an event, recompute every hash after it and
the chain head, and `Ledger.verify` passes. A checkpoint fixes that the way Certificate
Transparency's signed tree heads do (RFC 9162 section 4.10,
https://www.rfc-editor.org/rfc/rfc9162#section-4.10): it signs the size and Merkle root
of the ledger with an Ed25519 key the ledger's writer cannot reach, and copies of it
live elsewhere (CI artifacts, git history, a gate report). A later ledger is honest only
if its first `tree_size` events still hash to the signed root.

The leaf of event i is the 32 bytes of the event's hash *recomputed from its content* by
the sha256-over-canonical-JSON rule of `store.event_hash` (on an intact ledger, the stored
hash). That hash covers the event's id, time, kind, actor, payload and the hash before it,
so a leaf commits to the event and to the chain up to it, and a third party who holds the
event's JSON can recompute the leaf with the standard library.

The signature covers `signed_text`, a few lines of ASCII, so nothing depends on a JSON
serialiser agreeing byte for byte. Besides the signed fields a checkpoint stores the roots
of aligned blocks of events (`block_size` events each, one block per event up to
`MAX_BLOCKS` events): they are not signed themselves but must rebuild the signed root, and
they let a verifier name the first event (or block) that no longer matches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hardenml.ledger.merkle import (
    block_roots,
    inclusion_proof,
    leaf_hash,
    root_from_blocks,
    tree_root,
)
from hardenml.ledger.store import Event, Ledger, LedgerError

KEY_ENV = "HARDENML_LEDGER_KEY"
CHECKPOINT_FORMAT = "hardenml.ledger.checkpoint/1"
PROOF_FORMAT = "hardenml.ledger.inclusion-proof/1"
SIGNED_TEXT_HEADER = "hardenml ledger checkpoint v1"
# Up to this many events a checkpoint names the exact first rewritten event; beyond it, the
# first rewritten block of `block_size` events (a 64-character hex root per block).
MAX_BLOCKS = 4096
LEAF_RULE = (
    "leaf = SHA-256(0x00 || bytes.fromhex(event_hash)), where event_hash = sha256 of "
    "json.dumps({event_id, ts, kind, actor, payload, prev_hash}, sort_keys=True, "
    "separators=(',', ':'), ensure_ascii=False); nodes = SHA-256(0x01 || left || right), "
    "split at the largest power of two below n (RFC 9162 section 2.1)"
)
_SIGNED_FIELDS = ("tree_size", "root_hash", "chain_head", "timestamp", "key_id")
# Where a gate's reports carry the checkpoint: a key of gate-report.json, a property of the
# SARIF run, and a property of the JUnit policy suite (its value, the checkpoint's JSON).
REPORT_KEY = "ledger_checkpoint"
UNANCHORED_LIMITATION = (
    "without a checkpoint this check cannot detect a rewrite by someone with write access "
    "to the ledger file (drop the append-only triggers, edit an event, recompute every hash "
    "after it); sign one with `hardenml ledger checkpoint`, keep it outside the workspace, "
    "and check against it with `hardenml ledger verify --checkpoint FILE`"
)
NOT_SIGNED_IN_REPORT = (
    f"no ledger checkpoint was signed: ${KEY_ENV} was not set when the gate ran. The ledger "
    "head above is only as trustworthy as the ledger file: whoever can write that file can "
    "edit an event, recompute every hash after it and move the head, and nothing in this "
    f"report would show it. Set ${KEY_ENV} to a key kept outside the workspace (`hardenml "
    "ledger keygen PATH`) so that every report carries a signed checkpoint"
)


class CheckpointError(LedgerError):
    """A key or checkpoint file that cannot be used; the message names it and the fix."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, in hex (how RFC 6962 names a log's key)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def generate_key(path: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to `path` (mode 600) and its public key beside it
    (`path` + `.pub`); return both paths."""
    path = Path(path)
    public_path = public_key_path(path)
    if not overwrite:
        for existing in (path, public_path):
            if existing.exists():
                raise CheckpointError(
                    f"{existing} already exists; a new key would orphan every checkpoint "
                    "signed with it (pass --force to replace it anyway)"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created with mode 600 rather than chmod-ed after writing, so the key is never readable
    # by others, not even for a moment.
    if overwrite and path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, public_path


def key_path_from(explicit: Path | None, *, purpose: str) -> Path:
    """`explicit`, else the path in $HARDENML_LEDGER_KEY; a usage error naming both if neither."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(KEY_ENV, "").strip()
    if from_env:
        return Path(from_env)
    raise CheckpointError(
        f"{purpose} needs the ledger key: pass --key PATH or set {KEY_ENV} (create one "
        "outside the workspace with `hardenml ledger keygen PATH`)"
    )


def _read_pem(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"key file {path} does not exist (create one with `hardenml ledger keygen PATH`)"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read key file {path}: {exc.strerror}") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    pem = _read_pem(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CheckpointError(
            f"{path} is not an unencrypted PEM private key; signing needs the private key "
            "that `hardenml ledger keygen` wrote, not its .pub file"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """The public key in `path`, or the public half of the private key there."""
    pem = _read_pem(path)
    if b"PRIVATE KEY" in pem:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise CheckpointError(f"{path} is not a PEM public or private key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def signing_key_from_env() -> Ed25519PrivateKey | None:
    """The key $HARDENML_LEDGER_KEY names, or None when it is unset (for the gate, which
    checkpoints when a key is configured and says so when not)."""
    from_env = os.environ.get(KEY_ENV, "").strip()
    return load_signing_key(Path(from_env)) if from_env else None


def signed_text(fields: Mapping[str, Any]) -> str:
    """The exact bytes the signature covers: a header line, then `name value` per field."""
    lines = [SIGNED_TEXT_HEADER, *(f"{name} {fields[name]}" for name in _SIGNED_FIELDS)]
    return "\n".join(lines) + "\n"


def event_leaf(event: Event) -> bytes:
    return leaf_hash(bytes.fromhex(event.expected_hash()))


def _block_size(tree_size: int) -> int:
    size = 1
    while tree_size > size * MAX_BLOCKS:
        size *= 2
    return size


def _intact_events(ledger: Ledger) -> list[Event]:
    report = ledger.verify()
    if not report.ok:
        raise CheckpointError(
            f"the ledger {ledger.path} fails its own chain check ({report.problems[0]}); "
            "run `hardenml ledger verify`: signing it would vouch for the damage"
        )
    # Events appended between the check and this read are left for the next checkpoint.
    events = ledger.events()[: report.events]
    if events and events[-1].hash != report.head_hash:
        raise CheckpointError(f"the ledger {ledger.path} changed while it was being read")
    return events


def sign_checkpoint(
    events: Sequence[Event], key: Ed25519PrivateKey, *, timestamp: str | None = None
) -> dict[str, Any]:
    """The signed checkpoint of `events` (a ledger's first events, in order)."""
    leaves = [event_leaf(e) for e in events]
    block_size = _block_size(len(leaves))
    fields: dict[str, Any] = {
        "tree_size": len(leaves),
        "root_hash": tree_root(leaves).hex(),
        "chain_head": events[-1].hash if events else "0" * 64,
        "timestamp": timestamp or datetime.now(UTC).isoformat(timespec="seconds"),
        "key_id": key_id(key.public_key()),
    }
    signature = key.sign(signed_text(fields).encode("ascii"))
    return {
        "format": CHECKPOINT_FORMAT,
        **fields,
        "signature": base64.b64encode(signature).decode("ascii"),
        "leaf_rule": LEAF_RULE,
        "block_size": block_size,
        "block_roots": [root.hex() for root in block_roots(leaves, block_size)],
    }


def current_checkpoint(ledger: Ledger, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign the ledger as it stands, after checking its chain (a broken chain is refused
    with a CheckpointError rather than signed)."""
    return sign_checkpoint(_intact_events(ledger), key)


@dataclass(frozen=True)
class Divergence:
    """Where the current ledger stops matching a checkpoint."""

    seq: int  # the first event (1-based) that does not match, or the first missing one
    event_id: str  # "-" when the event is missing
    detail: str

    def __str__(self) -> str:
        return f"event #{self.seq} ({self.event_id}): {self.detail}"


@dataclass(frozen=True)
class CheckpointVerdict:
    checkpoint_size: int
    ledger_size: int
    problems: list[str]
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return not self.problems


def _field(checkpoint: Mapping[str, Any], name: str, kind: type) -> Any:
    value = checkpoint.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(
            f"the checkpoint has no valid `{name}` ({kind.__name__}); it is not a file "
            "written by `hardenml ledger checkpoint`"
        )
    return value


def check_signature(checkpoint: Mapping[str, Any], public_key: Ed25519PublicKey) -> list[str]:
    """Problems with the checkpoint itself: format, key, signature, block roots."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"the checkpoint's format is {checkpoint.get('format')!r}, not {CHECKPOINT_FORMAT!r}"
        )
    fields: dict[str, Any] = {
        name: _field(checkpoint, name, int if name == "tree_size" else str)
        for name in _SIGNED_FIELDS
    }
    _field(checkpoint, "signature", str)
    if fields["key_id"] != key_id(public_key):
        return [
            f"the checkpoint was signed by key {fields['key_id'][:16]}…, not by the key given "
            f"({key_id(public_key)[:16]}…)"
        ]
    try:
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        public_key.verify(signature, signed_text(fields).encode("ascii"))
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        return ["the checkpoint's signature does not verify: it was altered after signing"]
    blocks = checkpoint.get("block_roots")
    block_size = checkpoint.get("block_size")
    if blocks is not None:
        try:
            rebuilt = root_from_blocks(
                [bytes.fromhex(b) for b in blocks], int(block_size or 0), fields["tree_size"]
            )
        except (ValueError, TypeError):
            rebuilt = b""
        if rebuilt.hex() != fields["root_hash"]:
            return ["the checkpoint's block roots do not rebuild its signed root"]
    return []


def verify_against_checkpoint(
    ledger: Ledger, checkpoint: Mapping[str, Any], public_key: Ed25519PublicKey
) -> CheckpointVerdict:
    """Does the ledger extend the signed checkpoint? Signature valid, chain intact, and its
    first `tree_size` events hash to the signed root; names the first event that does not."""
    problems = check_signature(checkpoint, public_key)
    size = int(checkpoint["tree_size"])
    events = ledger.events()
    if problems:
        return CheckpointVerdict(size, len(events), problems, None)
    problems += [f"chain: {p}" for p in ledger.verify().problems]
    leaves = [event_leaf(e) for e in events]
    divergence = None
    if len(leaves) < size:
        problems.append(
            f"the ledger holds {len(leaves)} events but the checkpoint signed {size}: "
            "events were removed"
        )
    if tree_root(leaves[:size]).hex() != checkpoint["root_hash"]:
        divergence = _first_divergence(events, leaves, checkpoint)
        problems.append(
            f"the ledger does not extend the checkpoint: its first {size} events no longer "
            f"hash to the signed root; first difference at {divergence}"
        )
    elif size and events[size - 1].hash != checkpoint["chain_head"]:
        problems.append(f"event #{size}'s hash is not the signed chain head")
    return CheckpointVerdict(size, len(events), problems, divergence)


def _first_divergence(
    events: Sequence[Event], leaves: Sequence[bytes], checkpoint: Mapping[str, Any]
) -> Divergence:
    size = int(checkpoint["tree_size"])
    block_size = int(checkpoint.get("block_size") or 0)
    signed_blocks = checkpoint.get("block_roots")
    if not signed_blocks or block_size < 1:
        return Divergence(1, events[0].event_id if events else "-", f"somewhere in #1..#{size}")
    current = block_roots(leaves[:size], block_size)
    for index, signed in enumerate(signed_blocks):
        start = index * block_size
        if index >= len(current) or current[index].hex() != signed:
            if start >= len(events):
                return Divergence(start + 1, "-", "missing (removed after the checkpoint)")
            event = events[start]
            if block_size == 1:
                detail = f"{event.kind}, rewritten after the checkpoint"
            else:
                end = min(start + block_size, size)
                detail = f"a rewrite within events #{start + 1}..#{end}"
            return Divergence(start + 1, event.event_id, detail)
    return Divergence(size, events[size - 1].event_id, "the signed root differs")


def signed_in_report_note(checkpoint: Mapping[str, Any]) -> str:
    """What a report says beside the checkpoint it carries: what it covers and how to check it."""
    return (
        f"signed checkpoint of the ledger's first {checkpoint['tree_size']} events (root "
        f"{checkpoint['root_hash']}, key {str(checkpoint['key_id'])[:16]}…): `hardenml ledger "
        "verify --checkpoint THIS_FILE --key PUBLIC_KEY` proves a later ledger extends it"
    )


def _from_junit(text: str, path: Path) -> dict[str, Any]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CheckpointError(f"{path} is neither JSON nor readable XML: {exc}") from None
    for prop in root.iter("property"):
        if prop.get("name") == REPORT_KEY:
            try:
                inner = json.loads(prop.get("value") or "")
            except ValueError:
                break
            if isinstance(inner, dict):
                return inner
    raise CheckpointError(
        f"{path} carries no `{REPORT_KEY}` property: the gate that wrote it ran without "
        f"${KEY_ENV}, so no checkpoint was signed"
    )


def _from_json(data: dict[str, Any], path: Path) -> dict[str, Any]:
    if "format" in data:  # a checkpoint file itself
        return data
    holder: Any = data
    runs = data.get("runs")
    if isinstance(runs, list) and runs and isinstance(runs[0], dict):  # a SARIF log
        holder = runs[0].get("properties") or {}
    inner = holder.get(REPORT_KEY, holder.get("checkpoint"))
    if isinstance(inner, dict):
        return inner
    raise CheckpointError(
        f"{path} holds no signed checkpoint: it is not a checkpoint file, and its "
        f"`{REPORT_KEY}` is missing or null (the gate ran without ${KEY_ENV})"
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file, or the checkpoint inside a gate's report that carries one:
    gate-report.json, the SARIF log or the JUnit XML."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {path} is not readable text: {exc}") from None
    if text.lstrip().startswith("<"):
        return _from_junit(text, Path(path))
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint file {path} does not hold a JSON object")
    return _from_json(data, Path(path))


def prove_inclusion(ledger: Ledger, event_id: str, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The inclusion proof of `event_id` against `checkpoint` (whose tree must be a prefix of
    the ledger, which the caller checks with `verify_against_checkpoint`)."""
    size = int(checkpoint["tree_size"])
    events = ledger.events()[:size]
    index = next((i for i, e in enumerate(events) if e.event_id == event_id), None)
    if index is None:
        raise CheckpointError(
            f"no event {event_id!r} among the {size} events the checkpoint covers "
            "(`hardenml findings show` lists event ids; a newer event needs a newer checkpoint)"
        )
    leaves = [event_leaf(e) for e in events]
    event = events[index]
    return {
        "format": PROOF_FORMAT,
        "event": {
            "seq": event.seq,
            "event_id": event.event_id,
            "ts": event.ts,
            "kind": event.kind,
            "actor": event.actor,
            "payload": event.payload,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        },
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": leaves[index].hex(),
        "audit_path": [node.hex() for node in inclusion_proof(index, leaves)],
        "checkpoint": {name: checkpoint[name] for name in (*_SIGNED_FIELDS, "signature")},
        "how_to_check": [
            "1. event_hash: " + LEAF_RULE,
            "2. fold audit_path into the leaf hash with RFC 9162 section 2.1.3.2; the result "
            "must equal checkpoint.root_hash",
            "3. the Ed25519 signature (base64) must verify over the lines "
            f"'{SIGNED_TEXT_HEADER}', then 'NAME VALUE' for {', '.join(_SIGNED_FIELDS)}, "
            "each ending in a newline, with the public key whose SHA-256 of DER "
            "SubjectPublicKeyInfo is key_id",
        ],
    }
