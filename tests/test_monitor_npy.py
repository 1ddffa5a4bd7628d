"""The service's own reader of `numpy.save` bodies (`POST /v1/predict` with
`application/x-npy`) reads exactly what `np.load` reads, and leaves whatever it does not
recognise to `np.load`: a differential property test against numpy itself."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hardenml.monitor.inputs import _plain_npy

DTYPES = st.sampled_from(["<f4", "<f8", "<i4", "<i8", "|u1", "|i1", ">f4", "<f2", "<c8"])


def saved(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(
    arrays(DTYPES, array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    st.booleans(),
)
def test_it_reads_what_np_load_reads_or_leaves_it_to_np_load(
    array: np.ndarray, fortran: bool
) -> None:
    body = saved(np.asfortranarray(array) if fortran else array)
    expected = np.load(io.BytesIO(body), allow_pickle=False)
    read = _plain_npy(body)
    if read is None:
        return
    assert read.dtype == expected.dtype and read.shape == expected.shape
    assert np.array_equal(read, expected, equal_nan=True)
    assert read.flags.writeable  # torch.from_numpy wants a writable array


@given(st.binary(max_size=300))
def test_bytes_that_are_no_plain_npy_are_left_to_np_load(body: bytes) -> None:
    assert _plain_npy(body) is None


def test_a_truncated_or_padded_body_is_left_to_np_load() -> None:
    body = saved(np.ones((4, 3), np.float32))
    assert _plain_npy(body) is not None
    assert _plain_npy(body[:-1]) is None and _plain_npy(body + b"\0") is None
