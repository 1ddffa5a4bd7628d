"""`BatchHistogram` against prometheus_client's own `Histogram`: the same values give the
same scrape (bucket counts, count, sum), whether observed one at a time or in batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hardenml.monitor.batch_histogram import BatchHistogram
from hardenml.monitor.metrics import CONFIDENCE_BUCKETS


def scraped(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but `_created` (a timestamp), by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


values = st.lists(
    st.one_of(
        st.floats(min_value=-2.0, max_value=3.0, allow_nan=False),
        st.sampled_from([*CONFIDENCE_BUCKETS, 0.0]),  # exactly on a bound: `le` counts it
    ),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(values=values, cut=st.integers(min_value=0, max_value=200))
def test_scrape_equals_prometheus_histogram(values: list[float], cut: int) -> None:
    reference_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("conf", "doc", buckets=CONFIDENCE_BUCKETS, registry=reference_registry)
    batched = BatchHistogram("conf", "doc", buckets=CONFIDENCE_BUCKETS, registry=batch_registry)
    for value in values:
        reference.observe(value)
    batched.observe_many(np.asarray(values[:cut]))  # two batches, one possibly empty
    batched.observe_many(np.asarray(values[cut:]))
    want, got = scraped(reference_registry), scraped(batch_registry)
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


def test_created_gauge_and_any_shape() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("conf", "doc", buckets=(0.5, 1.0), registry=registry)
    histogram.observe_many(np.asarray(0.5))  # any shape
    histogram.observe_many(np.asarray([[0.7, 2.0]]))
    samples = scraped(registry)
    assert samples[("conf_bucket", (("le", "0.5"),))] == 1
    assert samples[("conf_bucket", (("le", "1.0"),))] == 2
    assert samples[("conf_bucket", (("le", "+Inf"),))] == 3
    assert samples[("conf_sum", ())] == pytest.approx(3.2)
    assert "conf_created" in generate_latest(registry).decode()


@pytest.mark.parametrize("buckets", [(0.5, 0.2), (0.2, 0.2)])
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="distinct and ascending"):
        BatchHistogram("conf", "doc", buckets=buckets, registry=CollectorRegistry())
