class _Series:
    def __init__(self, times: list[float], values: list[float]) -> None: ...

def assess(
    series: _Series,
    index: int,
    has_started: bool,
    sensor_started_s: float,
    night: bool,
    out_of_sensor_range: bool,
) -> tuple[float | None, int, int, int, int]: ...
def faults_at(series: _Series, index: int, night: bool) -> int: ...
def compression_episode(
    series: _Series, index: int
) -> tuple[float, float, float, float, float] | None: ...
