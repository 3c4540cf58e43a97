import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]

def carbs_on_board(
    times_s: _F64,
    carb_t_s: _F64,
    carb_g: _F64,
    carb_absorption_min: _F64,
    model: int,
    delay_min: float,
    cob_out: _F64,
    absorbed_out: _F64,
) -> None: ...
