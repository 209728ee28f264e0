"""Cards as they are printed: one card is one card on every reader type.

Pure: a scan's ``tag`` and ``fmt`` in, printed numbers and a match out.

An EM4100 card is printed with two numbers, e.g. ``0008075634 123,14706`` on
the card an RDM6300 reads as ``6F007B3972``: ten decimal digits for the low
32 bits (what a Wiegand 34 reader sends) and ``facility,number`` for the low
24 bits (8 + 16 bits, what a Wiegand 26 reader sends). So the one card is
``6F007B3972`` on an RDM6300, ``007B3972`` on a Wiegand 34 reader and
``7B3972`` on a Wiegand 26 reader.

ISO 14443A (MIFARE) UIDs carry no printed number that every vendor agrees on
(some print the 4-byte UID as decimal, in either byte order), so none is
derived: enrol such cards by ``tag``. A Wiegand 34 reader in front of a
MIFARE card sends 4 UID bytes (most readers in reverse order); that scan has
``fmt = "wiegand34"`` and is printed as ten digits like any other.

Matching compares what both sides carry: a ten-digit card and a scan that
carries 32 bits compare 32 bits; a ``facility,number`` card, or a Wiegand 26
scan (which cannot tell more), compare the low 24 bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from wire.messages import ScanFormat

LOW24 = 0xFFFFFF
LOW32 = 0xFFFFFFFF


Fmt = ScanFormat  # what a scan's ``tag`` is (wire key ``fmt``)

FMTS = frozenset(str(f) for f in Fmt)


class CardError(ValueError):
    """Text that is not a printed card number (names the value and the forms)."""


_HEX = re.compile(r"^[0-9A-F]+$")
_DIGITS10 = re.compile(r"^[0-9]{10}$")
_FACILITY = re.compile(r"^([0-9]{1,3})\s*,\s*([0-9]{1,5})$")


def infer_fmt(tag: str, fmt: str | None) -> Fmt | None:
    """The scan's format: its ``fmt``, else what only one format looks like.

    Older agents send no ``fmt``: ten hex digits can only be an EM4100 card
    and six only a Wiegand 26 frame; eight could be Wiegand 34 or a 4-byte
    ISO 14443A UID, so they get none.
    """
    if fmt in FMTS:
        return Fmt(fmt)
    if fmt is not None:
        return None  # a format this central does not know
    return {10: Fmt.EM4100, 6: Fmt.WIEGAND26}.get(len(tag))


@dataclass(slots=True, frozen=True)
class Bits:
    """What a scan says about a card: the low 32 bits, or only the low 24."""

    low32: int | None
    low24: int


def scan_bits(tag: str, fmt: str | None) -> Bits | None:
    """The card number bits a scan carries; None when it carries no printed number."""
    if not isinstance(tag, str) or not _HEX.match(tag):
        return None
    kind = infer_fmt(tag, fmt)
    if kind is Fmt.EM4100 and len(tag) == 10:
        value = int(tag, 16)
        return Bits(value & LOW32, value & LOW24)
    if kind is Fmt.WIEGAND34 and len(tag) == 8:
        value = int(tag, 16)
        return Bits(value, value & LOW24)
    if kind is Fmt.WIEGAND26 and len(tag) == 6:
        return Bits(None, int(tag, 16))
    return None


def ten_digits(value: int) -> str:
    return "%010d" % value


def facility_number(low24: int) -> str:
    return f"{low24 >> 16},{low24 & 0xFFFF}"


def printed(tag: str, fmt: str | None) -> list[str]:
    """The printed numbers of a scan: ``6F007B3972`` -> ``["0008075634", "123,14706"]``."""
    bits = scan_bits(tag, fmt)
    if bits is None:
        return []
    if infer_fmt(tag, fmt) is Fmt.EM4100:
        assert bits.low32 is not None
        return [ten_digits(bits.low32), facility_number(bits.low24)]
    if bits.low32 is not None:
        return [ten_digits(bits.low32)]
    return [facility_number(bits.low24)]


@dataclass(slots=True, frozen=True)
class Card:
    """A printed number: ``width`` 32 (ten digits) or 24 (``facility,number``)."""

    value: int
    width: int

    @property
    def text(self) -> str:
        return ten_digits(self.value) if self.width == 32 else facility_number(self.value)

    def matches(self, bits: Bits) -> bool:
        if self.width == 32 and bits.low32 is not None:
            return bits.low32 == self.value
        return bits.low24 == self.value & LOW24


def parse_card(text: object) -> Card:
    """``"0008075634"`` or ``"123,14706"``; raises :class:`CardError` otherwise."""
    if isinstance(text, str):
        s = text.strip()
        if _DIGITS10.match(s) and int(s) <= LOW32:
            return Card(int(s), 32)
        m = _FACILITY.match(s)
        if m and int(m.group(1)) <= 0xFF and int(m.group(2)) <= 0xFFFF:
            return Card(int(m.group(1)) << 16 | int(m.group(2)), 24)
    raise CardError(
        f"card {text!r} must be a printed number: ten digits up to 4294967295 (\"0008075634\")"
        " or facility,number up to 255,65535 (\"123,14706\")")


def looks_printed(tag: str) -> bool:
    """A ``tag`` of only decimal digits, 8 to 10 long, is most likely a printed number."""
    return tag.isdigit() and 8 <= len(tag) <= 10


@dataclass(slots=True, frozen=True)
class Roster:
    """Who may scan: exact tags and printed cards (a route's teams' members)."""

    tags: frozenset[str] = frozenset()
    cards: frozenset[Card] = frozenset()
    _by32: frozenset[int] = field(init=False, repr=False, compare=False)
    _by24: frozenset[int] = field(init=False, repr=False, compare=False)
    _low24_of32: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "_by32", frozenset(c.value for c in self.cards if c.width == 32))
        put(self, "_by24", frozenset(c.value for c in self.cards if c.width == 24))
        put(self, "_low24_of32", frozenset(v & LOW24 for v in self._by32))

    @classmethod
    def of(cls, tags: Iterable[str] = (), cards: Iterable[Card] = ()) -> Roster:
        return cls(frozenset(tags), frozenset(cards))

    def admits(self, tag: str, fmt: str | None = None) -> bool:
        if tag in self.tags:
            return True
        if not self.cards:
            return False
        bits = scan_bits(tag, fmt)
        if bits is None:
            return False
        if bits.low24 in self._by24:
            return True
        if bits.low32 is not None:
            return bits.low32 in self._by32
        return bits.low24 in self._low24_of32  # a Wiegand 26 scan cannot tell more

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and self.admits(tag)


def plan_line(tag: str, fmt: str | None, *, name: str = "NAME") -> str:
    """A member entry to paste into a plan for an unknown card."""
    numbers = printed(tag, fmt)
    if numbers:
        return f'{{ name = "{name}", tag = "{tag}", card = "{numbers[0]}" }}'
    return f'{{ name = "{name}", tag = "{tag}" }}'


def with_cards(event: dict[str, Any]) -> dict[str, Any]:
    """An event's JSON form, a scan given ``cards`` (its printed numbers; empty when none)."""
    tag = event.get("tag")
    if event.get("kind") == "scan" and isinstance(tag, str):
        fmt = event.get("fmt")
        event["cards"] = printed(tag, fmt if isinstance(fmt, str) else None)
    return event
