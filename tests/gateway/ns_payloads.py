"""Recorded-shape Nightscout uploads as xDrip+, AndroidAPS and Loop send them (times fixed)."""

from __future__ import annotations

from typing import Any

T0_MS = 1_768_478_400_000  # 2026-01-15T12:00:00Z, the tests' clock
MIN_MS = 60_000


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def xdrip_sgvs(n: int = 12) -> list[dict[str, Any]]:
    """xDrip+ REST uploader: newest first, 5-minute readings with raw values and noise."""
    out = []
    for i in range(n):
        ms = T0_MS - i * 5 * MIN_MS
        out.append(
            {
                "device": "xDrip-DexcomG6",
                "date": ms,
                "dateString": iso(ms),
                "sysTime": iso(ms),
                "sgv": 150 - i * 3,
                "delta": 3.0,
                "direction": "FortyFiveUp" if i < 3 else "Flat",
                "type": "sgv",
                "filtered": (150 - i * 3) * 1000,
                "unfiltered": (150 - i * 3) * 1000 + 500,
                "rssi": 100,
                "noise": 1,
            }
        )
    return out


def aaps_treatments() -> list[dict[str, Any]]:
    return [
        {
            "eventType": "Meal Bolus",
            "insulin": 4.5,
            "carbs": 45,
            "created_at": iso(T0_MS - 90 * MIN_MS),
            "enteredBy": "AndroidAPS",
            "isSMB": False,
            "pumpId": 4711,
            "pumpType": "ACCU_CHEK_COMBO",
            "pumpSerial": "PUMP123",
            "identifier": "aaps-7f3c-0001",
        },
        {
            "eventType": "Correction Bolus",
            "insulin": 0.4,
            "type": "SMB",
            "isSMB": True,
            "created_at": iso(T0_MS - 60 * MIN_MS),
            "enteredBy": "openaps://AndroidAPS",
            "identifier": "aaps-7f3c-0002",
        },
        {
            "eventType": "Temp Basal",
            "duration": 30,
            "durationInMilliseconds": 1_800_000,
            "absolute": 1.2,
            "rate": 1.2,
            "isAbsolute": True,
            "created_at": iso(T0_MS - 55 * MIN_MS),
            "enteredBy": "openaps://AndroidAPS",
            "identifier": "aaps-7f3c-0003",
        },
        {
            "eventType": "Combo Bolus",
            "insulin": 2.0,
            "enteredinsulin": 5.0,
            "splitNow": 40,
            "splitExt": 60,
            "relative": 1.5,
            "duration": 120,
            "created_at": iso(T0_MS - 45 * MIN_MS),
            "enteredBy": "AndroidAPS",
            "identifier": "aaps-7f3c-0004",
        },
        {
            "eventType": "Carb Correction",
            "carbs": 15,
            "created_at": iso(T0_MS - 30 * MIN_MS),
            "enteredBy": "AndroidAPS",
            "identifier": "aaps-7f3c-0005",
        },
    ]


def loop_treatments() -> list[dict[str, Any]]:
    return [
        {
            "eventType": "Temp Basal",
            "timestamp": iso(T0_MS - 20 * MIN_MS),
            "created_at": iso(T0_MS - 20 * MIN_MS),
            "enteredBy": "loop://iPhone",
            "amount": 0.85,
            "rate": 0.85,
            "absolute": 0.85,
            "duration": 30,
            "temp": "absolute",
            "syncIdentifier": "4c6f6f70-0001",
        },
        {
            "eventType": "Correction Bolus",
            "insulin": 1.2,
            "programmed": 1.2,
            "type": "normal",
            "duration": 0,
            "created_at": iso(T0_MS - 15 * MIN_MS),
            "timestamp": iso(T0_MS - 15 * MIN_MS),
            "enteredBy": "loop://iPhone",
            "syncIdentifier": "4c6f6f70-0002",
        },
        {
            "eventType": "Carb Correction",
            "carbs": 30,
            "absorptionTime": 180,
            "foodType": "🍕",
            "created_at": iso(T0_MS - 10 * MIN_MS),
            "enteredBy": "loop://iPhone",
            "syncIdentifier": "4c6f6f70-0003",
        },
    ]


def aaps_devicestatus() -> dict[str, Any]:
    at = iso(T0_MS - 2 * MIN_MS)
    return {
        "device": "openaps://samsung SM-G970F",
        "created_at": at,
        "openaps": {
            "suggested": {
                "bg": 150,
                "eventualBG": 128,
                "reason": "COB: 20, Dev: 12",
                "timestamp": at,
            },
            "enacted": {"rate": 1.2, "duration": 30, "received": True, "timestamp": at},
            "iob": {"iob": 2.1, "basaliob": 0.3, "activity": 0.02, "time": at},
        },
        "pump": {
            "clock": at,
            "battery": {"percent": 75},
            "reservoir": 120.5,
            "status": {"status": "normal", "timestamp": at},
        },
        "uploaderBattery": 80,
        "isCharging": False,
    }


def loop_devicestatus() -> dict[str, Any]:
    at = iso(T0_MS - 1 * MIN_MS)
    return {
        "device": "loop://iPhone",
        "created_at": at,
        "loop": {
            "iob": {"iob": 1.1, "timestamp": at},
            "cob": {"cob": 20, "timestamp": at},
            "predicted": {"startDate": at, "values": [150, 148, 146, 143, 140]},
            "enacted": {"rate": 0.5, "duration": 30, "timestamp": at, "received": True},
            "recommendedBolus": 0,
            "timestamp": at,
            "version": "3.4.0",
            "name": "Loop",
        },
        "pump": {
            "clock": at,
            "pumpID": "123456",
            "model": "723",
            "reservoir": 85,
            "battery": {"percent": 60},
            "suspended": False,
            "bolusing": False,
        },
        "uploader": {"battery": 85, "name": "iPhone", "timestamp": at},
    }


def aaps_profile() -> dict[str, Any]:
    def sched(value):
        return [{"time": "00:00", "value": value, "timeAsSeconds": 0}]

    return {
        "defaultProfile": "Default",
        "store": {
            "Default": {
                "dia": 5,
                "carbratio": sched(10),
                "sens": sched(45),
                "basal": [
                    {"time": "00:00", "value": 0.8, "timeAsSeconds": 0},
                    {"time": "06:00", "value": 1.1, "timeAsSeconds": 21600},
                ],
                "target_low": sched(100),
                "target_high": sched(120),
                "timezone": "UTC",
                "units": "mg/dl",
            }
        },
        "startDate": iso(T0_MS - 24 * 60 * MIN_MS),
        "units": "mg/dl",
        "enteredBy": "AndroidAPS",
    }
