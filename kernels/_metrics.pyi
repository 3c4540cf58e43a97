import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]

def glucose_metrics(mg_dl: _F64, expected_count: float, out: _F64) -> None: ...
