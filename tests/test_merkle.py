"""The ledger's Merkle tree against RFC 6962 / RFC 9162: published vectors, and every proof
of every small tree verifying while altered ones do not."""

from __future__ import annotations

import hashlib

import pytest

from hardenml.ledger.merkle import (
    EMPTY_ROOT,
    block_roots,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_blocks,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

# The test data and tree heads of RFC 6962's reference implementation (the same vectors
# appear in Google's certificate-transparency and Android's libavb AFTL tests).
CT_LEAVES_HEX = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
CT_LEAVES = [bytes.fromhex(h) for h in [*CT_LEAVES_HEX, "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATH_5_OF_8 = [
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
]


def test_roots_match_the_published_tree_heads() -> None:
    hashed = [leaf_hash(d) for d in CT_LEAVES]
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert [tree_root(hashed[:n]).hex() for n in range(9)] == CT_ROOTS


def test_inclusion_path_matches_the_published_one() -> None:
    hashed = [leaf_hash(d) for d in CT_LEAVES]
    assert [p.hex() for p in inclusion_proof(5, hashed)] == CT_PATH_5_OF_8


def _tree(n: int) -> list[bytes]:
    return [leaf_hash(f"event {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("n", range(1, 34))
def test_every_inclusion_proof_verifies_and_altered_ones_fail(n: int) -> None:
    leaves = _tree(n)
    root = tree_root(leaves)
    other = hashlib.sha256(b"not this leaf").digest()
    for index in range(n):
        proof = inclusion_proof(index, leaves)
        assert verify_inclusion(index, n, leaves[index], proof, root)
        assert not verify_inclusion(index, n, other, proof, root)
        if proof:
            bent = [*proof[:-1], other]
            assert not verify_inclusion(index, n, leaves[index], bent, root)
        if n > 1:
            assert not verify_inclusion((index + 1) % n, n, leaves[index], proof, root)


@pytest.mark.parametrize("n", range(1, 26))
def test_every_consistency_proof_verifies_and_a_rewritten_prefix_fails(n: int) -> None:
    leaves = _tree(n)
    root = tree_root(leaves)
    for m in range(n + 1):
        proof = consistency_proof(m, leaves)
        assert verify_consistency(m, n, tree_root(leaves[:m]), root, proof)
        if 0 < m < n:
            rewritten = [leaf_hash(b"rewritten"), *leaves[1:]]
            assert not verify_consistency(m, n, tree_root(leaves[:m]), tree_root(rewritten), proof)
            assert not verify_consistency(m, n, tree_root(rewritten[:m]), root, proof)


@pytest.mark.parametrize("block_size", [1, 2, 4, 16])
def test_block_roots_rebuild_the_root(block_size: int) -> None:
    for n in range(40):
        leaves = _tree(n)
        blocks = block_roots(leaves, block_size)
        assert root_from_blocks(blocks, block_size, n) == tree_root(leaves)
    with pytest.raises(ValueError, match="power of two"):
        block_roots(_tree(4), 3)
