"""Local hard limits: provisioned once, read-only, every command checked."""

import dataclasses
import json

import pytest

from edge.limits import (
    AGE_GROUP_MAXIMA,
    AgeGroup,
    LimitsFileError,
    check_command,
    load_limits,
    provision_limits,
)
from tests.edge._commands import MANUAL, T0, make_command


@pytest.mark.parametrize(
    ("group", "bolus", "basal", "iob"),
    [
        (AgeGroup.CHILD, 5, 2, 7),
        (AgeGroup.TEEN, 10, 5, 13),
        (AgeGroup.ADULT, 17, 10, 22),
        (AgeGroup.RESISTANT, 25, 12, 30),
        (AgeGroup.PREGNANT, 60, 25, 70),
    ],
)
def test_age_group_maxima_match_the_brief(tmp_path, group, bolus, basal, iob):
    limits = provision_limits(tmp_path / "limits.json", group)
    assert (limits.max_bolus_u, limits.max_basal_u_per_h, limits.max_iob_u) == (bolus, basal, iob)
    assert load_limits(tmp_path / "limits.json") == limits


def test_written_once_and_read_only(tmp_path):
    path = tmp_path / "limits.json"
    limits = provision_limits(path, AgeGroup.CHILD, max_bolus_u=3.0)
    assert limits.max_bolus_u == 3.0
    assert path.stat().st_mode & 0o222 == 0
    with pytest.raises(LimitsFileError, match="only once"):
        provision_limits(path, AgeGroup.PREGNANT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_bolus_u = 60  # type: ignore[misc]
    assert load_limits(path).max_bolus_u == 3.0


def test_cannot_provision_above_the_age_group(tmp_path):
    with pytest.raises(LimitsFileError, match="exceeds"):
        provision_limits(tmp_path / "l.json", AgeGroup.CHILD, max_bolus_u=6)
    assert not (tmp_path / "l.json").exists()


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "limits.json"
    provision_limits(path, AgeGroup.CHILD)
    doc = json.loads(path.read_text())
    doc["limits"]["max_bolus_u"] = 60
    path.chmod(0o644)
    path.write_text(json.dumps(doc))
    with pytest.raises(LimitsFileError, match="checksum"):
        load_limits(path)
    path.write_text("{not json")
    with pytest.raises(LimitsFileError):
        load_limits(path)


def test_commands_are_checked():
    child = AGE_GROUP_MAXIMA[AgeGroup.CHILD]
    ok_temp = make_command(sequence=1, issued_at=T0, rate_u_per_h=2.0)
    assert check_command(child, ok_temp) is None
    high_temp = make_command(sequence=1, issued_at=T0, rate_u_per_h=2.05)
    violation = check_command(child, high_temp)
    assert violation is not None
    assert "hard limit" in violation.detail
    long_auto = make_command(sequence=1, issued_at=T0, rate_u_per_h=1.0)
    long_auto.set_temp_basal.duration_min = 121
    assert check_command(child, long_auto) is not None
    long_manual = make_command(sequence=1, issued_at=T0, rate_u_per_h=1.0, origin=MANUAL)
    long_manual.set_temp_basal.duration_min = 240
    assert check_command(child, long_manual) is None
    nan_temp = make_command(sequence=1, issued_at=T0, rate_u_per_h=float("nan"))
    assert check_command(child, nan_temp) is not None
    big_bolus = make_command(sequence=1, issued_at=T0, bolus_u=5.5, origin=MANUAL)
    assert check_command(child, big_bolus) is not None
    bolus = make_command(
        sequence=1, issued_at=T0, bolus_u=4.0, origin=MANUAL, automatic_bolus=False
    )
    assert check_command(child, bolus) is None
    assert check_command(child, bolus, iob_u=3.5) is not None  # 3.5 + 4 > 7
    smb = make_command(sequence=1, issued_at=T0, bolus_u=0.3)
    violation = check_command(child, smb)  # no IOB estimate, no automatic bolus
    assert violation is not None
    assert "IOB" in violation.detail
    assert check_command(child, smb, iob_u=1.0) is None
    auto_high = make_command(sequence=1, issued_at=T0, rate_u_per_h=2.0)
    # 6.8 U on board + (2.0 − 0.5) U/h × 0.5 h = 7.55 U > 7 U
    assert check_command(child, auto_high, iob_u=6.8, scheduled_basal_u_per_h=0.5) is not None
    cancel = make_command(sequence=1, issued_at=T0, rate_u_per_h=None)
    assert check_command(child, cancel) is None
