"""Wiegand frame decoding (pure): HID H10301 (26 bits) and H10306 (34 bits).

A Wiegand reader sends one bit per pulse on DATA0/DATA1; the microcontroller
collects them and hands the Pi ``bits`` (the count) and ``data`` (the bits as an
integer, first bit sent most significant). Both formats frame the payload with
two parity bits:

* H10301, 26 bits: ``P FFFFFFFF CCCCCCCCCCCCCCCC P`` -- the leading bit makes
  bits 1..13 even, the trailing bit makes bits 14..26 odd (bits numbered 1..26
  in sending order). 8-bit facility code, 16-bit card number.
* H10306, 34 bits: ``P F*16 C*16 P`` -- the leading bit makes bits 1..17
  even, the trailing bit makes bits 18..34 odd. 16-bit facility, 16-bit card.

The tag is the payload between the two parity bits, upper-case hex: 6 digits
for 26 bits, 8 for 34 (facility and card number side by side, as printed on
the card: facility 123, card 45678 -> ``7BB26E``).
"""

from __future__ import annotations

from typing import Final

from agent.inputs.readers.errors import WiegandError

__all__ = ["SUPPORTED_BITS", "WiegandError", "decode_wiegand"]

# bits -> number of payload bits between the parity bits
_PAYLOAD_BITS: Final = {26: 24, 34: 32}
SUPPORTED_BITS: Final = frozenset(_PAYLOAD_BITS)


def _ones(value: int) -> int:
    return bin(value).count("1")


def decode_wiegand(bits: int, data: int) -> str:
    """The tag of one Wiegand frame, or :class:`WiegandError` when it is not a valid one.

    ``bits`` must be 26 or 34; ``data`` must fit in ``bits`` bits. Both parity
    bits are checked: the leading one (even) over the first half of the
    payload, the trailing one (odd) over the second half.
    """
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise WiegandError(f"wiegand frame: bits must be an integer, not {type(bits).__name__}")
    if isinstance(data, bool) or not isinstance(data, int):
        raise WiegandError(f"wiegand frame: data must be an integer, not {type(data).__name__}")
    payload_bits = _PAYLOAD_BITS.get(bits)
    if payload_bits is None:
        raise WiegandError(f"wiegand frame: {bits} bits is not a supported format (26 or 34)")
    if not 0 <= data < (1 << bits):
        raise WiegandError(f"wiegand frame: data does not fit in {bits} bits")

    half = payload_bits // 2
    leading = data >> (bits - 1)
    trailing = data & 1
    payload = (data >> 1) & ((1 << payload_bits) - 1)
    first_half = payload >> half
    second_half = payload & ((1 << half) - 1)
    if (_ones(first_half) + leading) % 2 != 0:
        raise WiegandError(f"wiegand frame: {bits}-bit frame has a bad leading (even) parity bit")
    if (_ones(second_half) + trailing) % 2 != 1:
        raise WiegandError(f"wiegand frame: {bits}-bit frame has a bad trailing (odd) parity bit")
    return f"{payload:0{payload_bits // 4}X}"
