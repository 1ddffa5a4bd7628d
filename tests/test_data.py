"""Data: bundled and file sources, content hashes, provenance, seeded splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardenml.config import DataConfig
from hardenml.data import (
    DataError,
    Dataset,
    array_sha256,
    fit_to_shape,
    load_source,
    prepare,
    split,
)


def test_mnist5k_is_real_mnist():
    ds = load_source("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert sorted(np.unique(ds.y).tolist()) == list(range(10))
    assert ds.provenance["file_sha256"] and ds.provenance["source"] == "mnist5k"


@pytest.mark.parametrize(
    ("name", "n", "features", "classes"),
    [("digits", 1797, 64, 10), ("breast_cancer", 569, 30, 2), ("wine", 178, 13, 3)],
)
def test_bundled_datasets(name: str, n: int, features: int, classes: int):
    ds = load_source(name)
    assert ds.x.shape == (n, features) and len(ds.classes) == classes
    assert ds.sha256 == load_source(name).sha256


def test_split_is_seeded_stratified_and_disjoint():
    ds = load_source("wine")
    a_train, a_test = split(ds, test_fraction=0.3, seed=1)
    _, b_test = split(ds, test_fraction=0.3, seed=1)
    c_train, _ = split(ds, test_fraction=0.3, seed=2)
    assert a_test.sha256 == b_test.sha256 and a_train.sha256 != c_train.sha256
    assert len(a_train) + len(a_test) == len(ds)
    assert abs(np.bincount(a_test.y)[0] / len(a_test) - np.bincount(ds.y)[0] / len(ds)) < 0.05
    assert a_test.provenance["split"] == "test" and a_test.provenance["split_seed"] == 1


def test_npz_and_csv_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 3)).astype(np.float32), rng.integers(0, 2, 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    from_npz = load_source("d.npz", root=tmp_path)
    assert from_npz.sha256 == array_sha256(x, y.astype(np.int64))
    lines = ["a,b,label,c"] + [
        f"{r[0]},{r[1]},{'yes' if t else 'no'},{r[2]}" for r, t in zip(x, y, strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    from_csv = load_source("d.csv", root=tmp_path, label_column="label")
    assert from_csv.classes == ("no", "yes")
    np.testing.assert_allclose(from_csv.x, x, rtol=1e-6)
    np.testing.assert_array_equal(from_csv.y, y)


def test_unsafe_npz_is_refused(tmp_path: Path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match=r"obj\.npz: it holds pickled objects"):
        load_source("obj.npz", root=tmp_path)


def test_missing_source_is_explained(tmp_path: Path):
    with pytest.raises(DataError, match="neither a bundled dataset"):
        load_source("nowhere.npz", root=tmp_path)


def test_prepare_scales_caps_and_reshapes():
    train, test = prepare(
        DataConfig(source="breast_cancer", scale="minmax", max_samples=50, seed=3), root=Path(".")
    )
    assert len(test) == 50 and test.x.min() >= 0 and test.x.max() <= 1
    assert train.x.min() == 0 and train.x.max() == 1
    digits = load_source("digits")
    assert fit_to_shape(digits, (1, 8, 8)).x.shape == (1797, 1, 8, 8)
    with pytest.raises(DataError, match=r"model\.input\.shape"):
        fit_to_shape(digits, (10,))


def test_too_few_samples_to_split_is_a_data_error():
    one = Dataset(np.zeros((1, 3), np.float32), np.zeros(1, np.int64), ("a",), {"source": "x.npz"})
    with pytest.raises(DataError, match=r"x\.npz has 1 samples: too few"):
        split(one, test_fraction=0.25, seed=0)
    # Ten classes seen twice each, but a test side of five: too few to stratify, so the
    # split is plain (scikit-learn refused the stratified one).
    twenty = Dataset(np.zeros((20, 3), np.float32), np.arange(20) % 10, tuple("abcdefghij"))
    train, test = split(twenty, test_fraction=0.25, seed=0)
    assert (len(train), len(test)) == (15, 5)
