"""Printed card numbers (central/cards.py): one card is one card on every reader type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.cards import CardError, Roster, parse_card, plan_line, printed

EM = "6F007B3972"


def test_the_design_example_card_on_each_reader_type() -> None:
    assert printed(EM, "em4100") == ["0008075634", "123,14706"]
    assert printed("007B3972", "wiegand34") == ["0008075634"]
    assert printed("7B3972", "wiegand26") == ["123,14706"]
    assert printed("04A1B2C3", "iso14443a") == []


def test_a_scan_without_fmt_is_printed_only_where_its_length_says_what_it_is() -> None:
    assert printed(EM, None) == ["0008075634", "123,14706"]
    assert printed("7B3972", None) == ["123,14706"]
    assert printed("007B3972", None) == []  # Wiegand 34 or a 4-byte MIFARE UID
    assert printed(EM, "hid-prox") == []  # a format this central does not know
    assert printed("6F007B397", "em4100") == []
    assert printed("not-hex!", "em4100") == []


@given(st.integers(0, 2**40 - 1))
def test_em4100_numbers_are_its_low_32_and_low_24_bits(value: int) -> None:
    tag = f"{value:010X}"
    ten, fac = printed(tag, "em4100")
    assert len(ten) == 10 and int(ten) == value & 0xFFFFFFFF
    facility, number = (int(x) for x in fac.split(","))
    assert facility == (value >> 16) & 0xFF and number == value & 0xFFFF
    # what a Wiegand 34 and a Wiegand 26 reader send for the same card
    assert printed(f"{value & 0xFFFFFFFF:08X}", "wiegand34") == [ten]
    assert printed(f"{value & 0xFFFFFF:06X}", "wiegand26") == [fac]
    assert parse_card(ten).text == ten and parse_card(fac).text == fac


@given(st.integers(0, 2**40 - 1))
def test_a_card_enrolled_by_either_printed_number_matches_every_reader_type(value: int) -> None:
    ten, fac = printed(f"{value:010X}", "em4100")
    scans = [(f"{value:010X}", "em4100"), (f"{value & 0xFFFFFFFF:08X}", "wiegand34"), (f"{value & 0xFFFFFF:06X}", "wiegand26")]
    for card in (ten, fac):
        roster = Roster.of(cards=[parse_card(card)])
        assert all(roster.admits(tag, fmt) for tag, fmt in scans)


def test_a_ten_digit_card_compares_32_bits_where_the_scan_has_them() -> None:
    roster = Roster.of(cards=[parse_card("0008075634")])
    assert roster.admits("7B3972", "wiegand26")  # a Wiegand 26 reader cannot tell more
    assert not roster.admits("6F017B3972", "em4100")  # same low 24 bits, another card
    assert not roster.admits("017B3972", "wiegand34")
    assert Roster.of(cards=[parse_card("123,14706")]).admits("6F017B3972", "em4100")
    assert not roster.admits("7B3973", "wiegand26")
    assert Roster.of(tags=["04A1B2C3"]).admits("04A1B2C3", "iso14443a")


@pytest.mark.parametrize("text", ["8075634", "4294967296", "256,1", "1,65536", "123;14706", "", "0x7B3972", 8075634])
def test_what_is_not_a_printed_number_is_refused_naming_the_value_and_the_forms(text: object) -> None:
    with pytest.raises(CardError) as info:
        parse_card(text)
    assert str(info.value) == (f"card {text!r} must be a printed number: ten digits up to 4294967295 (\"0008075634\")"
                               " or facility,number up to 255,65535 (\"123,14706\")")


@given(st.text(max_size=14))
def test_parse_card_accepts_only_what_it_can_print_back(text: str) -> None:
    try:
        card = parse_card(text)
    except CardError:
        return
    assert parse_card(card.text) == card


def test_a_plan_line_for_an_unknown_card() -> None:
    assert plan_line(EM, "em4100") == '{ name = "NAME", tag = "6F007B3972", card = "0008075634" }'
    assert plan_line("04A1B2C3", "iso14443a") == '{ name = "NAME", tag = "04A1B2C3" }'
