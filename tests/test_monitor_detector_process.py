"""The detector child process: it answers like the detectors themselves, and a child that
dies or stops answering hands the work back to the service instead of stopping the watch."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hardenml.monitor.detector_process import DetectorProcess, judge
from hardenml.monitor.detectors import DetectorReading, FeatureDrift, Window

pytestmark = pytest.mark.skipif(not DetectorProcess.available(), reason="needs fork")


class MeanShift:
    """A detector whose answer says which process computed it."""

    name = "mean-shift"

    def evaluate(self, window: Window) -> list[DetectorReading]:
        rows = window.flat_inputs(self.name)
        return [
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=float(rows.mean()),
                p_value=None,
                flagged=False,
                n=len(rows),
                detail=str(os.getpid()),
            )
        ]


class StuckInChild(MeanShift):
    """Never answers in any process but the one that built it."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def evaluate(self, window: Window) -> list[DetectorReading]:
        if os.getpid() != self.parent:
            time.sleep(3600)
        return super().evaluate(window)


def _window(seed: int = 0) -> Window:
    return Window(inputs=np.random.default_rng(seed).normal(size=(50, 4)))


def test_the_child_judges_as_the_detectors_do_in_another_process() -> None:
    reference = np.random.default_rng(1).normal(size=(200, 4))
    detectors = [FeatureDrift(reference), MeanShift()]
    process = DetectorProcess(detectors, niceness=0)
    process.start()
    try:
        here = judge(detectors, _window())
        there = process.evaluate(_window())
    finally:
        process.close()
    assert [name for name, _ in there] == [name for name, _ in here]
    assert there[0] == here[0]  # the drift readings, value for value
    (reading,) = there[1][1]
    assert int(reading.detail) != os.getpid()


def test_a_dead_child_hands_the_work_back_to_the_service() -> None:
    process = DetectorProcess([MeanShift()], niceness=0)
    process.start()
    process._process.kill()
    process._process.join(5)
    (outcome,) = process.evaluate(_window())
    (reading,) = outcome[1]
    assert int(reading.detail) == os.getpid()
    process.close()


def test_a_child_that_stops_answering_is_killed_and_the_service_judges() -> None:
    process = DetectorProcess([StuckInChild()], niceness=0, answer_within_s=1.0)
    process.start()
    child = process._process
    started = time.monotonic()
    (outcome,) = process.evaluate(_window())
    assert time.monotonic() - started < 10
    (reading,) = outcome[1]
    assert int(reading.detail) == os.getpid()
    child.join(5)
    assert not child.is_alive()
    process.close()
