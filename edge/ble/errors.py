"""The one error every Bluetooth codec raises."""

from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """Bytes that do not form a valid value of the characteristic (truncated, bad CRC, ...).

    Decoders raise only this, never IndexError or struct.error, so a transport can treat any
    undecodable notification the same way: drop it, count it, and never act on it.
    """
