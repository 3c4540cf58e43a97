import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]

def insulin_curve(
    ages_min: _F64,
    model: int,
    duration_min: float,
    peak_min: float,
    delay_min: float,
    iob_out: _F64,
    activity_out: _F64,
) -> None: ...
def insulin_grid(
    now_s: float,
    utc_offset_min: float,
    n_past: int,
    dose_t_s: _F64,
    dose_kind: _F64,
    dose_amount: _F64,
    dose_duration_min: _F64,
    basal_start_min: _F64,
    basal_rate_u_per_h: _F64,
    model: int,
    duration_min: float,
    peak_min: float,
    delay_min: float,
    iob_out: _F64,
    activity_out: _F64,
) -> None: ...
