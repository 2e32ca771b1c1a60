"""The benchmark suite's helpers: importable, and their statistics right (no timing here)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

from _bench import Figure, Summary, Target, fmt, percentile, proc_memory  # noqa: E402


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([0.0, 10.0], 99, 9.9),
    ],
    ids=["one", "odd", "even", "min-unsorted", "max", "interpolated"],
)
def test_percentile_interpolates_between_closest_ranks(
    samples: list[float], q: float, expected: float
) -> None:
    assert percentile(samples, q) == pytest.approx(expected)


def test_percentile_refuses_no_samples_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_summary_has_median_quartiles_and_extremes_and_scales() -> None:
    s = Summary.of([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (s.median, s.p25, s.p75, s.low, s.high, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    ms = s.scaled(1000)
    assert (ms.median, ms.low, ms.high, ms.n) == (3000.0, 1000.0, 5000.0, 5)


def test_target_ratio_and_verdict_in_both_directions() -> None:
    fast = Figure("g", "ours", "p50", "us", Summary.of([50.0]))
    slow = Figure("g", "theirs", "p50", "us", Summary.of([200.0]))
    assert Target("latency", fast, slow, 0.5).value() == pytest.approx(0.25)
    assert Target("latency", fast, slow, 0.5).met() is True
    assert Target("throughput", fast, slow, 1.5, at_most=False).met() is False
    assert Target("absolute", fast, None, 20.0, absolute=True).met() is False


def test_a_figure_that_could_not_be_measured_shows_why() -> None:
    missing = Figure("cold start", "peer", "first result", "ms", None, error="hung: killed")
    assert "hung: killed" in missing.cells()
    assert Target("ratio", missing, missing, 1.0).met() is None


def test_fmt_keeps_three_significant_digits() -> None:
    assert [fmt(x) for x in (0, 0.01234, 1.234, 12.34, 123.4, 12345.6)] == [
        "0",
        "0.0123",
        "1.23",
        "12.3",
        "123",
        "12,346",
    ]


def test_proc_memory_reads_this_process() -> None:
    me = proc_memory(os.getpid())
    assert me is not None and me.pid == os.getpid()
    assert 0 < me.uss <= me.rss and me.pss <= me.rss


def test_the_suite_imports() -> None:
    import run  # noqa: F401 - the whole suite, its contenders and report writers

    assert callable(run.main) and callable(run.chart) and callable(run.markdown)
