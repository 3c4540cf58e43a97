import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]

def bolus_calc(p: _F64, out: _F64) -> None: ...
