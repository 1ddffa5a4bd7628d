"""Attack parameters from TOML against constructor annotations (`hardenml.threats.parameters`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytest

from hardenml.threats.parameters import annotations_of, mismatch, parameter_problems


@pytest.mark.parametrize(
    ("annotation", "good", "bad"),
    [
        (int, [0, -3, 10**12], [1.5, 10.0, "10", True, None]),
        (float, [0, 2.5, -1e-9], [float("nan"), float("inf"), "0.1", False]),
        (bool, [True, False], [0, 1, "true"]),
        (str, ["x", ""], [1, ["x"]]),
        (Literal["linf", "l2"], ["linf", "l2"], ["l1", 2, None]),
        (float | None, [None, 0.5, 3], ["a", float("nan")]),
        (Sequence[int], [[], [1, 2], (3,)], [1, "12", [1, 2.5]]),
        (Sequence[Sequence[float]], [[[0, 1]], []], [[0, 1], [[0, "a"]]]),
        (tuple[float, float], [[0, 1], (0.5, 1.5)], [[0], [0, 1, 2], [0, "x"]]),
        (tuple[int, ...], [[], [1, 2, 3]], [[1, 1.5]]),
        (Mapping[str, Any], [{}, {"a": [1]}], [[], "a=1"]),
        (dict[str, int], [{"a": 1}], [{"a": 1.5}]),
        (Any, [1, "x", None, [1]], []),
    ],
)
def test_values_fit_or_are_named_with_what_would(annotation, good, bad):
    for value in good:
        assert mismatch(annotation, value) is None, (annotation, value)
    for value in bad:
        expected = mismatch(annotation, value)
        assert expected, (annotation, value)


def test_unknown_annotations_leave_the_judgement_to_the_constructor():
    class Tensorish:
        pass

    assert mismatch(Tensorish, [1, 2]) is None
    assert mismatch(int | Tensorish, "anything") is None


def test_string_annotations_that_name_only_type_checker_aliases():
    """ART annotates `estimator: "CLASSIFIER_TYPE"`, a name that exists only for type
    checkers; the builtin unions beside it are still read and checked."""

    def init(self, estimator, *, max_iter=10, eps=0.3) -> None:  # type: ignore[no-untyped-def]
        pass

    init.__annotations__ = {
        "estimator": "CLASSIFIER_TYPE",
        "max_iter": "int",
        "eps": "float | np.ndarray",
    }
    hints = annotations_of(init)
    assert hints["max_iter"] is int and hints["eps"] is Any and hints["estimator"] is Any
    assert parameter_problems(init, {"max_iter": 2.5, "eps": "whatever"}) == {
        "max_iter": "a whole number (int), written without a decimal point"
    }
