"""The Merkle tree hashing of Certificate Transparency, over the ledger's events.

RFC 9162 section 2.1 (https://www.rfc-editor.org/rfc/rfc9162#section-2.1), unchanged
from RFC 6962: a leaf is hashed as SHA-256(0x00 || leaf), an interior node as
SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at k, the largest power
of two smaller than n. The empty tree's hash is SHA-256 of the empty string. The two
prefixes keep a leaf from ever passing for a node (second-preimage resistance).

Inclusion proofs (section 2.1.3) show one leaf is in a tree of a given root; consistency
proofs (section 2.1.4) show a tree of size m is a prefix of one of size n. The verifiers
here follow the RFC's algorithms step by step, so a third party can re-implement them
from the RFC and the standard library alone.

Every function takes leaf *hashes* (`leaf_hash(data)`), so a tree is built once per list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than `n` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaf hashes `leaves`."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index`, nearest sibling first."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is outside a tree of {len(leaves)} leaves")
    if len(leaves) == 1:
        return []
    k = split_point(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), tree_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), tree_root(leaves[:k])]


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does `proof` place the leaf hash `leaf` at `index` under `root`?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): the nodes that show the first `old_size` leaves are a prefix."""
    if not 0 <= old_size <= len(leaves):
        raise ValueError(f"an old size of {old_size} does not fit a tree of {len(leaves)}")
    if old_size in (0, len(leaves)):
        return []
    return _subproof(old_size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [tree_root(leaves)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), tree_root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), tree_root(leaves[:k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of `old_root` a prefix of the tree of `new_root`?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof  # the empty tree is a prefix of every tree
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def block_roots(leaves: Sequence[bytes], block_size: int) -> list[bytes]:
    """The roots of consecutive blocks of `block_size` leaves (a power of two), the last
    possibly shorter. Each is a subtree of the RFC tree, so `root_from_blocks` rebuilds the
    root from them: a checkpoint that stores them can say which block changed."""
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block size must be a power of two, got {block_size}")
    return [tree_root(leaves[i : i + block_size]) for i in range(0, len(leaves), block_size)]


def root_from_blocks(blocks: Sequence[bytes], block_size: int, tree_size: int) -> bytes:
    """MTH of a tree of `tree_size` leaves, from its `block_roots`."""
    if tree_size == 0:
        return EMPTY_ROOT
    if len(blocks) != -(-tree_size // block_size):
        raise ValueError(f"{len(blocks)} blocks of {block_size} cannot hold {tree_size} leaves")

    def subtree(lo: int, hi: int) -> bytes:
        # Every split point of a range wider than a block is a multiple of the block size
        # (a power of two at least as large), so the recursion meets blocks exactly.
        if hi - lo <= block_size:
            return blocks[lo // block_size]
        k = split_point(hi - lo)
        return node_hash(subtree(lo, lo + k), subtree(lo + k, hi))

    return subtree(0, tree_size)
