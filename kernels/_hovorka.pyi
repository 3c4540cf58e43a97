import numpy as np
import numpy.typing as npt

def step_block(
    state: npt.NDArray[np.float64],
    params: npt.NDArray[np.float64],
    inputs: npt.NDArray[np.float64],
    n_steps: int,
    dt_min: float,
) -> None: ...
