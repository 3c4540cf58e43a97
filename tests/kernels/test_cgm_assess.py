"""The compiled CGM assessment (kernels.cgm_assess) gives exactly the reference's results
(services.cgm_ingestion.assessment) on generated series: trends, noise, faults, quality,
compression episodes and gaps."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import cgm_assess
from services.cgm_ingestion import assessment
from services.cgm_ingestion.assessment import Point

START_S = 1_764_000_000.0


def make_series(seed: int) -> tuple[list[float], list[float]]:
    """A sensor trace with the shapes the checks look for: 5-min steps with jitter, gaps,
    readings seconds apart, flat runs, noise, jumps, night-time compression dips."""
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    times: list[float] = []
    values: list[float] = []
    t = START_S + rng.uniform(-3600.0, 3600.0)
    g = float(rng.randint(40, 400))
    noise = rng.choice([0.0, 0.0, 1.0, 4.0, 9.0, 20.0])
    flat_share = rng.choice([0.15, 0.15, 0.9])  # some sensors stick at one value
    for _ in range(n):
        step = rng.choice([300.0, 300.0, 300.0, 299.5, 301.0, 60.0, 5.0, 1200.0, 3600.0])
        t += step + rng.choice([0.0, 0.0, rng.uniform(-20.0, 20.0)])
        shape = rng.random()
        if shape < flat_share:
            pass  # flat: same value again
        elif shape < flat_share + 0.1:
            g += rng.choice([-40.0, -30.0, 30.0, 45.0])  # a jump or a compression drop
        elif shape < flat_share + 0.2 and values:
            g = values[max(0, len(values) - rng.randint(3, 8))]  # recovery to a baseline
        else:
            g += rng.gauss(0.0, 3.0) + rng.gauss(0.0, noise)
        g = float(min(400, max(40, round(g)))) if rng.random() < 0.8 else min(400.0, max(40.0, g))
        times.append(t)
        values.append(g)
    return times, values


def _outcome(assess: Callable[..., object], *args: object, **kwargs: object) -> object:
    """What `assess` returns, or the type of the ZeroDivisionError it raises (the kernel must
    fail where the reference does)."""
    try:
        return assess(*args, **kwargs)
    except ZeroDivisionError as exc:
        return type(exc)


def check_agree(times: list[float], values: list[float], rng: random.Random) -> None:
    points = [Point(t, g) for t, g in zip(times, values, strict=True)]
    series = cgm_assess.Series(times, values)
    for index in range(len(points)):
        started = rng.choice([None, times[0] - rng.uniform(-600.0, 9000.0)])
        night = rng.random() < 0.7
        out_of_range = rng.random() < 0.2
        kwargs = {"sensor_started_s": started, "night": night, "out_of_sensor_range": out_of_range}
        expected = _outcome(assessment.assess, points, index, **kwargs)
        got = _outcome(cgm_assess.assess, series, index, **kwargs)
        assert got == expected, (index, times, values)
        expected = _outcome(assessment.faults_at, points, index, night=night)
        got = _outcome(cgm_assess.faults_at, series, index, night=night)
        assert got == expected, (index, times, values)
        assert cgm_assess.compression_episode(series, index) == assessment.compression_episode(
            points, index
        ), (index, times, values)
        assert cgm_assess.gap_before_s(series, index) == assessment.gap_before_s(points, index)


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_matches_reference_on_traces(seed: int) -> None:
    times, values = make_series(seed)
    check_agree(times, values, random.Random(seed))


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0.0, 1.0, 60.0, 299.0, 300.0, 450.0, 451.0, 900.0, 901.0, 5400.0]),
            st.integers(40, 400),
        ),
        min_size=1,
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_reference_at_boundaries(steps: list[tuple[float, int]], seed: int) -> None:
    """Steps right at the windows' and thresholds' edges, repeated times included."""
    times: list[float] = []
    t = START_S
    for step, _ in steps:
        t += step
        times.append(t)
    check_agree(times, [float(g) for _, g in steps], random.Random(seed))


def test_compression_dip_at_night_is_found_by_both() -> None:
    times = [START_S + 300.0 * i for i in range(14)]
    values = [120.0, 121.0, 120.0, 119.0, 120.0, 100.0, 80.0, 70.0, 72.0, 90.0, 118.0, 119.0]
    values += [120.0, 121.0]
    series = cgm_assess.Series(times, values)
    points = [Point(t, g) for t, g in zip(times, values, strict=True)]
    found = cgm_assess.compression_episode(series, 10)
    assert found is not None
    assert found == assessment.compression_episode(points, 10)
    assert found.trough_mg_dl == 70.0


@pytest.mark.parametrize(
    ("times", "values", "error"),
    [
        ([START_S, START_S + 300.0], [100.0], ValueError),
        ([START_S, float("nan")], [100.0, 101.0], ValueError),
        ([START_S, START_S + 300.0], [100.0, float("inf")], ValueError),
        ([START_S, "x"], [100.0, 101.0], TypeError),
    ],
)
def test_bad_series_is_refused(times: list[float], values: list[float], error: type) -> None:
    with pytest.raises(error):
        cgm_assess.Series(times, values)


def test_index_outside_the_series_is_refused() -> None:
    series = cgm_assess.Series([START_S], [100.0])
    with pytest.raises(IndexError):
        cgm_assess.assess(series, 1)
    with pytest.raises(IndexError):
        cgm_assess.faults_at(series, -1)
