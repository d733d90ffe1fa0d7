"""Periods are whole UTC hours: presets end with the current hour, custom ranges round outwards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from usage.filters import FilterError, parse_period

NOW = datetime(2026, 3, 10, 14, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "preset, start",
    [
        ("24h", datetime(2026, 3, 9, 15, tzinfo=UTC)),
        ("7d", datetime(2026, 3, 3, 15, tzinfo=UTC)),
        ("30d", datetime(2026, 2, 8, 15, tzinfo=UTC)),
    ],
)
def test_presets_end_after_the_current_hour(preset, start):
    period = parse_period({"period": preset}, now=NOW)
    assert period.end == datetime(2026, 3, 10, 15, tzinfo=UTC) and period.start == start


def test_no_parameters_mean_the_last_24_hours_with_hourly_bars():
    period = parse_period({}, now=NOW)
    assert period.preset == "24h" and period.hours == 24 and period.bucket == "hour"


def test_a_bare_end_date_includes_that_whole_day_and_times_round_outwards():
    period = parse_period({"start": "2026-03-01T10:30", "end": "2026-03-05"}, now=NOW)
    assert period.start == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 6, tzinfo=UTC)
    assert period.preset == "custom" and period.bucket == "day"


def test_offsets_are_converted_to_utc():
    period = parse_period({"start": "2026-03-01T10:00+02:00", "end": "2026-03-01T12:15Z"}, now=NOW)
    assert period.start == datetime(2026, 3, 1, 8, tzinfo=UTC) and period.end == datetime(2026, 3, 1, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    "params, param",
    [
        ({"period": "1y"}, "period"),
        ({"start": "03/01/2026"}, "start"),
        ({"start": "2026-03-05", "end": "2026-03-01"}, "end"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "start"),
    ],
)
def test_bad_periods_raise_a_filter_error_naming_the_parameter(params, param):
    with pytest.raises(FilterError) as error:
        parse_period(params, now=NOW)
    assert error.value.param == param
