"""The chart geometry of usage/charts.py: readable "nice" ticks for tiny, zero and large numbers, labels that never
repeat, bars that fit under the top tick, and an empty chart that says why it is empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usage import charts


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (2, [0, 1, 2]),
        (3, [0, 1, 2, 3]),
        (5, [0, 1, 2, 3, 4, 5]),
        (7, [0, 2, 4, 6, 8]),
        (8, [0, 2, 4, 6, 8]),
        (10, [0, 2, 4, 6, 8, 10]),
        (13, [0, 5, 10, 15]),
        (100, [0, 20, 40, 60, 80, 100]),
        (1234, [0, 500, 1000, 1500]),
        (2_000_000, [0, 500_000, 1_000_000, 1_500_000, 2_000_000]),
    ],
)
def test_count_ticks_are_whole_nice_numbers(peak, expected):
    assert charts.nice_ticks(peak, integers=True) == expected


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (0.00037, [0, 0.0001, 0.0002, 0.0003, 0.0004]),
        (0.000003, [0, 0.000001, 0.000002, 0.000003]),
        (0.0421, [0, 0.01, 0.02, 0.03, 0.04, 0.05]),
        (0.3, [0, 0.1, 0.2, 0.3]),
        (2.5, [0, 0.5, 1, 1.5, 2, 2.5]),
        (1234.5, [0, 500, 1000, 1500]),
    ],
)
def test_cost_ticks_follow_the_magnitude_of_the_cost(peak, expected):
    assert charts.nice_ticks(peak) == pytest.approx(expected)


@pytest.mark.parametrize("peak", [0.000003, 0.00037, 0.0042, 0.0421, 0.3, 1, 2.5, 17, 1234.5, 98_765])
def test_cost_tick_labels_are_all_different_and_the_top_covers_the_peak(peak):
    ticks = charts.nice_ticks(peak)
    labels = [charts.tick_label(v, ticks[1], "usd") for v in ticks]
    assert len(set(labels)) == len(labels), labels
    assert labels[0] == "$0"
    assert ticks[-1] >= peak
    assert 2 <= len(ticks) <= charts.MAX_INTERVALS + 1


def test_cost_tick_labels_for_small_costs():
    ticks = charts.nice_ticks(0.00037)
    assert [charts.tick_label(v, ticks[1], "usd") for v in ticks] == ["$0", "$0.0001", "$0.0002", "$0.0003", "$0.0004"]
    ticks = charts.nice_ticks(1234.5)
    assert [charts.tick_label(v, ticks[1], "usd") for v in ticks] == ["$0", "$500", "$1,000", "$1,500"]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0, "$0"),
        (0.000123, "$0.000123"),
        (0.042, "$0.0420"),
        (0.5, "$0.500"),
        (12.5, "$12.50"),
        (1234.5, "$1,234.50"),
    ],
)
def test_usd_values_keep_three_significant_digits_below_a_dollar(value, label):
    assert charts.format_usd(value) == label


def _hours(n: int) -> list[datetime]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [start + timedelta(hours=i) for i in range(n)]


def test_small_counts_get_one_tick_per_request():
    chart = charts.stacked_bars(_hours(3), {"free": [1, 3, 0], "premium": [0, 0, 2]}, bucket="hour", unit="requests")
    assert [t["label"] for t in chart["ticks"]] == ["0", "1", "2", "3"]
    # The tallest bar reaches the top tick exactly: stacked heights sum to the plot's height.
    tallest = [r for r in chart["rects"] if r["title"].startswith("2026-11-01 01:00")]
    assert sum(r["h"] for r in tallest) == pytest.approx(chart["bottom"] - chart["ticks"][-1]["y"], abs=0.02)
    assert not chart["empty"]


def test_tiny_costs_have_distinct_axis_labels_and_exact_tooltips():
    chart = charts.stacked_bars(_hours(2), {"premium": [0.00012, 0.00037]}, bucket="hour", unit="usd")
    labels = [t["label"] for t in chart["ticks"]]
    assert labels == ["$0", "$0.0001", "$0.0002", "$0.0003", "$0.0004"]
    assert chart["rects"][1]["title"].endswith("premium: $0.000370")


def test_a_chart_with_nothing_to_draw_says_why():
    chart = charts.stacked_bars(
        _hours(4),
        {"free": [0, 0, 0, 0]},
        bucket="hour",
        unit="usd",
        empty_message="Cost was $0 for the 4 requests in this period",
    )
    assert chart["empty"] and chart["rects"] == []
    assert chart["empty_message"] == "Cost was $0 for the 4 requests in this period"
    assert [t["label"] for t in chart["ticks"]] == ["$0", "$1"]
    drawn = charts.stacked_bars(_hours(1), {"free": [2]}, bucket="hour", unit="requests")
    assert drawn["empty_message"] == ""


def test_large_counts_are_printed_with_separators():
    chart = charts.stacked_bars(_hours(2), {"free": [1_200_000, 2_000_000]}, bucket="hour", unit="requests")
    assert [t["label"] for t in chart["ticks"]] == ["0", "500,000", "1,000,000", "1,500,000", "2,000,000"]


def test_an_unknown_unit_is_refused():
    with pytest.raises(ValueError):
        charts.stacked_bars(_hours(1), {}, bucket="hour", unit="tokens")
