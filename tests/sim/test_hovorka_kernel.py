"""The compiled Hovorka kernel against its NumPy reference, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.hovorka import N_INPUTS, N_STATES, step_block, step_block_reference
from sim.person import MMOL_PER_G_GLUCOSE, steady_state


def _random_case(cohort, rng):
    people = [cohort[i] for i in rng.choice(len(cohort), 8, replace=False)]
    params = np.stack([p.params for p in people])
    # start anywhere from low to very high glucose, on or off their basal
    state = np.stack(
        [
            steady_state(p.params, float(rng.uniform(40, 400)), float(rng.uniform(0, 3)))
            for p in people
        ]
    )
    state[:, 8] = rng.uniform(0, 300, len(people))  # food still in the gut
    inputs = np.zeros((len(people), N_INPUTS))
    inputs[:, 0] = rng.uniform(0, 5000, len(people))
    inputs[:, 1] = rng.uniform(0, 80, len(people)) * MMOL_PER_G_GLUCOSE
    inputs[:, 2] = rng.uniform(0, 15, len(people)) * MMOL_PER_G_GLUCOSE
    inputs[:, 3] = rng.uniform(0.5, 2.0, len(people))
    inputs[:, 4] = rng.uniform(0.8, 1.5, len(people))
    inputs[:, 5] = rng.uniform(0, 1.0, len(people))
    return params, state, inputs


@pytest.mark.parametrize("seed", range(5))
def test_compiled_kernel_matches_reference(cohort, seed):
    rng = np.random.default_rng(seed)
    params, state, inputs = _random_case(cohort, rng)
    expected = state.copy()
    actual = state.copy()
    for _ in range(12):  # an hour of 5-minute blocks
        expected = step_block_reference(expected, params, inputs)
        step_block(actual, params, inputs)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


def test_rejects_bad_shapes_and_leaves_state_unchanged(cohort):
    params = np.stack([cohort[0].params])
    state = np.zeros((1, N_STATES))
    before = state.copy()
    with pytest.raises(ValueError, match="columns"):
        step_block(state, params, np.zeros((1, N_INPUTS - 1)))
    bad = np.ones((1, N_INPUTS))
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        step_block(state, params, bad)
    with pytest.raises(ValueError, match="dt_min"):
        step_block(state, params, np.ones((1, N_INPUTS)), dt_min=2.0)
    with pytest.raises(TypeError):
        step_block(state.astype(np.float32), params, np.ones((1, N_INPUTS)))
    np.testing.assert_array_equal(state, before)


def _glucose_after(person, *, insulin_u=0.0, carbs_g=0.0, hours=3):
    basal = person.therapy.basal_at(0)
    state = steady_state(person.params, 120.0, basal)[None, :].copy()
    params = person.params[None, :].copy()
    inputs = np.zeros((1, N_INPUTS))
    inputs[0, 3:5] = 1.0
    for k in range(hours * 12):
        inputs[0, 0] = basal * 1000 / 12 + (insulin_u * 1000 if k == 0 else 0.0)
        inputs[0, 1] = carbs_g * MMOL_PER_G_GLUCOSE if k == 0 else 0.0
        step_block(state, params, inputs)
    return state[0, 0] / params[0, 0] * 18.016


def test_insulin_lowers_and_carbs_raise_glucose(cohort):
    for person in cohort:
        control = _glucose_after(person)
        assert _glucose_after(person, insulin_u=1.0) < control - 5
        assert _glucose_after(person, carbs_g=20.0) > control + 10
