"""`data.read_npz`: every array of an .npz, never a pickle, and a `DataError` naming the
file for everything else numpy would read or trip over."""

from __future__ import annotations

import contextlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardenml.data import DataError, read_npz


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def test_the_arrays_come_back_from_a_path_and_from_bytes(tmp_path: Path) -> None:
    blob = _npz(x=np.arange(6.0).reshape(2, 3), y=np.array([0, 1]))
    (tmp_path / "a.npz").write_bytes(blob)
    for source in (tmp_path / "a.npz", blob):
        arrays = read_npz(source, "a.npz")
        assert sorted(arrays) == ["x", "y"]
        np.testing.assert_array_equal(arrays["x"], np.arange(6.0).reshape(2, 3))


def _bare_npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.zeros(3))
    return out.getvalue()


def _damaged() -> bytes:
    """An archive whose member bytes were changed after it was written (its CRC fails)."""
    blob = bytearray(_npz(x=np.arange(64.0)))
    blob[200:240] = bytes(40)
    return bytes(blob)


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"", "is empty"),
        (b"not a zip", "not an .npz (zip) archive"),
        (_bare_npy(), "not an .npz (zip) archive"),
        (pickle.dumps({"x": 1}), "not an .npz (zip) archive"),
        (_npz(x=np.array([{"a": 1}], dtype=object)), "pickled objects"),
        (_damaged(), "damaged"),
    ],
)
def test_what_is_no_plain_npz_is_a_data_error_naming_the_file(blob: bytes, says: str) -> None:
    with pytest.raises(DataError, match=re.escape(says)) as raised:
        read_npz(blob, "submission s.npz")
    assert str(raised.value).startswith("submission s.npz")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_npz(tmp_path / "nope.npz", "nope.npz")


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=400))
def test_any_bytes_or_cut_archive_read_or_raise_a_data_error(noise: bytes, cut: int) -> None:
    for blob in (noise, _npz(x=np.arange(10))[:cut] + noise):
        with contextlib.suppress(DataError):  # any other exception fails the test
            read_npz(blob, "f.npz")
