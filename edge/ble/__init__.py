"""Bluetooth SIG codecs for the CGM Service (0x181F) and Insulin Delivery Service (0x183A)."""

from edge.ble.errors import CodecError

__all__ = ["CodecError"]
