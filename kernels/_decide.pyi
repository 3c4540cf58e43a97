import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]

def layout() -> dict[str, int]: ...
def decide_packed(
    params: _F64,
    cgm_t_s: _F64,
    cgm_mg_dl: _F64,
    dose_t_s: _F64,
    dose_kind: _F64,
    dose_amount: _F64,
    dose_duration_min: _F64,
    carb_t_s: _F64,
    carb_g: _F64,
    carb_absorption_min: _F64,
    basal_start_min: _F64,
    basal_rate_u_per_h: _F64,
    out: _F64,
) -> int: ...
