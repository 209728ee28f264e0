"""Fuzz every parser that takes outside input; count inputs tried, documented errors and crashes.

    .venv/bin/python -m bench.fuzz [--examples 20000] [--only NAME ...] [--seed 1] [--markdown FILE]

Each target is a public entry point fed by hypothesis (generation only, no
example database): raw bytes and text, and structure-aware inputs that get past
the first checks (valid maps, frames and documents with some values replaced,
keys dropped or added, frames cut or spliced). An input is counted as
``documented`` when it raises the error type the entry point documents (or, for
HTTP, answers 4xx), and as a ``crash`` when it raises anything else, answers
5xx, breaks the entry point's promise about its result, or makes our code log
an error. For each kind of crash the report gives a minimal input
(hypothesis.find).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import re
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import hypothesis
import msgpack
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from agent.config import ButtonConfig, McuConfig, OutputConfig, ReaderConfig, ZoneConfig
from agent.config import ConfigError as AgentConfigError
from agent.config import parse_config as parse_agent_config
from agent.inputs.mcu import McuLink
from agent.inputs.readers.errors import FrameError as ReaderFrameError
from agent.inputs.readers.errors import WiegandError
from agent.inputs.readers.pn532 import Ack as PnAck
from agent.inputs.readers.pn532 import ErrorFrame, Frame, FrameReader, Nack, build_frame, parse_target_uid
from agent.inputs.readers.rdm6300 import Rdm6300Parser
from agent.inputs.readers.rdm6300 import encode_frame as rdm_frame
from agent.inputs.readers.wiegand import decode_wiegand
from agent.simsocket import SimCommandError, parse_command
from central.config import ConfigError as CentralConfigError
from central.config import parse_config as parse_central_config
from central.inbound import Decoder, Inbound, Rejected
from central.plan.parse import PlanError, parse_plan, parse_plan_bytes
from firmware_bridge.firmware import framing
from firmware_bridge.script import ScriptError, parse_script
from gridpatrol import district
from wire import topics
from wire.codec import unpack
from wire.errors import DecodeError
from wire.messages import Ack, AgentStatus, Birth, CentralStatus, Command, CommandResponse, Event, StateSnapshot, Telemetry

_LOGGER = logging.getLogger("bench.fuzz")

# -- values hostile code meets ------------------------------------------------------

ODD_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1, 65535, 65536, 255, 256]
ODD_TEXT = ["", " ", "\x00", "\n", "\r\n", "\t", "central", "a\n", "67003B51C6\n", "school-9-gate-1\n",
            "../../etc/passwd", "%00", "%", "a" * 65, "a" * 5000,
            "\u202e", "\ud7ff", "😀", "名", "NaN", "inf", "-0", "1e999", "0x10", "１２", "١٢", "<script>", "'\"", "\\",
            "online", "offline", "scan", "alarm", "panic", "replay", "rebirth", "ack", "hello", "zone", "tag"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.sampled_from(ODD_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.sampled_from(ODD_TEXT),
    st.binary(max_size=40),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=8)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(ODD_INTS),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.sampled_from(ODD_TEXT))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=8)


def repeated(chunk: st.SearchStrategy[bytes], most: int) -> st.SearchStrategy[bytes]:
    """Long inputs without a long hypothesis buffer: a short piece many times."""
    return st.builds(lambda piece, n: piece * n, chunk, st.integers(1, most))


def mutate(template: dict[str, Any], value_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid map with some values replaced, some keys dropped and some added."""
    keys = sorted(template)

    def apply(replace: dict[str, Any], drop: set[str], extra: dict[str, Any]) -> dict[str, Any]:
        out = {**template, **replace}
        for k in drop:
            out.pop(k, None)
        return {**out, **extra}

    return st.builds(apply, st.dictionaries(st.sampled_from(keys), value_strategy, max_size=3),
                     st.sets(st.sampled_from(keys), max_size=2), st.dictionaries(st.text(max_size=10), value_strategy, max_size=2))


def packed(maps: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    def pack(obj: Any) -> bytes:
        try:
            return msgpack.packb(obj, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return b"\x80"
    return maps.map(pack)


def cut(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Truncated or with one byte changed."""
    def damage(b: bytes, at: int, how: int) -> bytes:
        if not b:
            return b
        i = at % len(b)
        return b[:i] if how < 0 else b[:i] + bytes([how]) + b[i + 1:]
    return st.builds(damage, data, st.integers(0, 10_000), st.integers(-1, 255))


def deep(open_: bytes, close: bytes, leaf: bytes = b"") -> st.SearchStrategy[bytes]:
    """Nesting n deep, closed m times (m <= n: balanced or cut); n often near a recursion limit."""
    near = st.sampled_from([100, 500, 800, 900, 950, 990, 1000, 1010, 1023, 1024, 2048])
    depth = st.one_of(near, near, st.integers(1, 3000))
    return st.builds(lambda n, m: open_ * n + leaf + close * min(m, n), depth, st.one_of(st.just(0), st.just(0), st.integers(0, 3000)))


def msgpack_payloads(templates: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    maps = st.one_of([mutate(t, values) for t in templates])
    odd_keys = st.dictionaries(st.one_of(st.integers(), st.binary(max_size=4), st.booleans()), values, min_size=1, max_size=3)
    ext = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)).map(lambda e: {"x": e})
    return st.one_of(
        packed(maps), packed(maps), cut(packed(maps)), st.binary(max_size=200), packed(values), packed(odd_keys), packed(ext),
        deep(b"\x91", b"", b"\xc0"), deep(b"\x81\xa1k", b"", b"\xc0"), repeated(st.binary(min_size=1, max_size=8), 20_000),
        packed(st.builds(lambda m, n: {**m, "pad": "x" * n}, maps, st.integers(60_000, 70_000))),
    )


def json_payloads(templates: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    maps = st.one_of([mutate(t, json_values) for t in templates])
    return st.one_of(maps.map(lambda m: json.dumps(m).encode()), cut(maps.map(lambda m: json.dumps(m).encode())),
                     json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200), deep(b"[", b"]"),
                     deep(b'{"a":', b"}", b"1"), st.text(max_size=100).map(str.encode))


# -- wire ---------------------------------------------------------------------------

TS = 1_767_225_600_000
EVENTS = [
    {"eseq": 1, "boot_id": "b1", "kind": "scan", "source": "gate-1", "ts": TS, "mono_ms": 5, "clock_synced": True,
     "replayed": False, "tag": "67003B51C6"},
    {"eseq": 2, "boot_id": "b1", "kind": "fault", "source": "mcu", "ts": TS, "mono_ms": 5, "clock_synced": False,
     "replayed": True, "code": "link-lost", "detail": "x"},
    {"eseq": 3, "boot_id": "b1", "kind": "output", "source": "siren", "ts": TS, "mono_ms": 5, "clock_synced": True,
     "replayed": False, "output": "siren", "on": True},
    {"eseq": 4, "boot_id": "b1", "kind": "tamper", "source": "z", "ts": TS, "mono_ms": 5, "clock_synced": True,
     "replayed": False, "state": "tamper-cut"},
]
BIRTH = unpack(Birth(1, "b1", "1.0", {"zones": ({"name": "z"},), "buttons": (), "readers": ({"name": "r", "protocol": "x"},),
                                      "outputs": ()}, "h", {"agent": "1"}, 5, TS, True).to_payload())
STATE = {"ts": TS, "inputs": {"z": "normal"}, "outputs": {"siren": False}, "latched": ["b"]}
TELE = unpack(Telemetry(1.5, 0, 0, True, TS, 5, 45.0, 1000, {"x": 1}).to_payload())
COMMANDS = [{"cmd": "rebirth", "txn": "t"}, {"cmd": "replay", "txn": "t", "from": 5}, {"cmd": "ping", "txn": "t"},
            {"cmd": "output", "txn": "t", "output": "siren", "on": True, "seconds": 30.0},
            {"cmd": "alarm-ack", "txn": "t", "source": "b"}]
RESPONSE = {"txn": "t", "ok": False, "error": "no"}
STATUS = {"state": "online", "bdseq": 1, "ts": TS}
CENTRAL = {"online": True, "ts": TS}
def parse_topic(name: str) -> None:
    parsed = topics.parse(name)
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", parsed.agent_id) or len(parsed.agent_id) > 64:
        raise AssertionError(f"topics.parse accepted agent id {parsed.agent_id!r}")


def parse_event(payload: bytes) -> None:
    event = Event.from_payload(payload)
    if event.kind == "scan" and not re.fullmatch(r"[0-9A-F]{2,32}", event.fields["tag"]):
        raise AssertionError(f"Event.from_payload accepted tag {event.fields['tag']!r}")


MSGPACK_KINDS: dict[str, tuple[Callable[[bytes], Any], list[dict[str, Any]]]] = {
    "Event": (parse_event, EVENTS), "Birth": (Birth.from_payload, [BIRTH]),
    "StateSnapshot": (StateSnapshot.from_payload, [STATE]), "Telemetry": (Telemetry.from_payload, [TELE]),
    "Command": (Command.from_payload, COMMANDS), "CommandResponse": (CommandResponse.from_payload, [RESPONSE]),
    "Ack": (Ack.from_payload, [{"eseq": 7}]),
}
ALL_MAPS = EVENTS + [BIRTH, STATE, TELE, *COMMANDS, RESPONSE, {"eseq": 7}]
CHANNELS = [str(c) for c in topics.Channel] + ["cmd/resp/x", "evt/", "", "#", "+", "completion/u"]
agent_ids = st.one_of(st.sampled_from(["school-9-gate-1", "school-9-gate-1\n", "central", "a", "-a", "a-", "A", "a" * 65, "", "+", "#"]),
                      st.text(max_size=20), st.from_regex(r"\A[a-z0-9-]{1,70}\Z"))
topic_names = st.one_of(
    st.builds(lambda a, c: f"{topics.ROOT}/{a}/{c}", agent_ids, st.one_of(st.sampled_from(CHANNELS), st.text(max_size=12))),
    st.text(max_size=60), st.sampled_from([topics.ROOT, topics.ROOT + "/", "gridpatrol/v2/a/evt", topics.CENTRAL_STATUS]),
)
central_inputs = st.tuples(
    st.builds(lambda a, c: f"{topics.ROOT}/{a}/{c}", st.sampled_from(["school-9-gate-1", "central", "x"]),
              st.sampled_from(CHANNELS[:9])) | topic_names,
    st.one_of(msgpack_payloads(ALL_MAPS), json_payloads([STATUS]), st.just(b"")), st.booleans())


def decode_central(args: tuple[str, bytes, bool]) -> None:
    result = Decoder().decode(args[0], args[1], received_ts=TS, retained=args[2])
    if not (result is None or isinstance(result, (Inbound, Rejected))):
        raise AssertionError(f"Decoder.decode returned {result!r}")


# -- readers --------------------------------------------------------------------------

hex_tags = st.from_regex(r"\A[0-9A-Fa-f]{10}\Z")
rdm_chunks = st.lists(st.one_of(
    hex_tags.map(rdm_frame), hex_tags.map(lambda t: rdm_frame(t, clone=True)), cut(hex_tags.map(rdm_frame)),
    st.binary(max_size=30), st.sampled_from([b"\x02", b"\x03", b"\x02\x02", b"0" * 12]),
    repeated(hex_tags.map(rdm_frame), 5),
), max_size=20)


def feed_rdm(chunks: list[bytes]) -> None:
    parser = Rdm6300Parser()
    for chunk in chunks:
        for tag in parser.feed(chunk):
            if not re.fullmatch(r"[0-9A-F]{10}", tag):
                raise AssertionError(f"RDM6300 parser returned tag {tag!r}")


pn_frames = st.one_of(
    st.binary(min_size=1, max_size=300).map(build_frame), st.binary(min_size=1, max_size=20).map(build_frame),
    st.sampled_from([b"\x00\x00\xff\x00\xff\x00", b"\x00\x00\xff\xff\x00\x00", b"\x00\x00\xff\x01\xff\x7f\x81\x00",
                     b"\x00\x00\xff\xff\xff", b"\x00\x00\xff"]),
)
pn_chunks = st.lists(st.tuples(st.one_of(pn_frames, cut(pn_frames), st.binary(max_size=40)), st.booleans()), max_size=15)


def feed_pn532(chunks: list[tuple[bytes, bool]]) -> None:
    reader = FrameReader()
    for chunk, quiet in chunks:
        items = reader.feed(chunk) + (reader.expire() if quiet else [])
        for item in items:
            if not isinstance(item, (Frame, PnAck, Nack, ErrorFrame)):
                raise AssertionError(f"PN532 reader returned {item!r}")


target_uids = st.one_of(st.binary(max_size=30), st.builds(
    lambda n, tg, sens, sak, uid: bytes([n, tg]) + sens + bytes([sak, len(uid)]) + uid,
    st.integers(0, 3), st.integers(0, 255), st.binary(min_size=2, max_size=2), st.integers(0, 255), st.binary(max_size=12)))
wiegand_args = st.tuples(st.one_of(st.sampled_from([26, 34]), st.integers(-5, 100), st.booleans(), st.floats(), st.none(),
                                   st.text(max_size=3)),
                         st.one_of(st.integers(0, 2**34), st.integers(), st.booleans(), st.floats(), st.none(), st.text(max_size=4)))


def wiegand(args: tuple[Any, Any]) -> None:
    tag = decode_wiegand(*args)
    if not re.fullmatch(r"[0-9A-F]{6}" if args[0] == 26 else r"[0-9A-F]{8}", tag):
        raise AssertionError(f"decode_wiegand{args} returned {tag!r}")


sim_lines = st.one_of(
    st.binary(max_size=80), st.builds(lambda a, b, c: " ".join([a, b, c]).encode("utf-8", "surrogatepass"),
                                      st.sampled_from(["drive", "Drive", "", "drive drive"]),
                                      st.one_of(st.from_regex(r"\A[0-9]{1,6}\Z"), st.sampled_from(ODD_TEXT), st.text(max_size=6)),
                                      st.one_of(st.sampled_from(["high", "low", "HIGH", ""]), st.text(max_size=6))),
    repeated(st.just(b"drive 1 high "), 200),
)


def sim_command(line: bytes) -> None:
    pin, high = parse_command(line)
    if not (isinstance(pin, int) and 0 <= pin <= 999 and isinstance(high, bool)):
        raise AssertionError(f"parse_command({line!r}) returned {(pin, high)!r}")


# -- the microcontroller link ---------------------------------------------------------

link_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.sampled_from(ODD_INTS),
                         st.text(max_size=20), st.sampled_from(ODD_TEXT[:30]), st.binary(max_size=12))
link_values = st.recursive(link_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=8)
BODY_TYPES = [framing.HELLO, framing.ZONE, framing.BUTTON, framing.WIEGAND, framing.TAG, framing.HB, framing.ACK,
              framing.OUT, framing.SYNC, "x", ""]
BODY_KEYS = ["input", "state", "bits", "data", "uid", "fw", "proto", "caps", "uptime_ms", "n", "t", "output", "on", "ms"]
FIELD_VALUES = st.one_of(link_values, st.sampled_from([*framing.ZONE_STATES, *framing.BUTTON_STATES, 0, 1, 2, 3, 26, 34, 256]),
                         st.integers(0, 2**34), st.binary(min_size=1, max_size=11))
bodies = st.builds(lambda t, n, fields: {**fields, "t": t, "n": n},
                   st.one_of(st.sampled_from(BODY_TYPES), st.text(min_size=1, max_size=8)), st.integers(0, 65535),
                   st.dictionaries(st.sampled_from(BODY_KEYS[:9]), FIELD_VALUES, max_size=4))


def framed(body: dict[str, Any]) -> bytes:
    try:
        return framing.encode_frame(body)
    except framing.FrameError:
        return b"\x00"


def raw_frame(raw: bytes) -> bytes:
    """Any body bytes with a good CRC and COBS, so they reach the msgpack decoder."""
    return framing.cobs_encode(raw + struct.pack(">H", framing.crc16(raw)))


firmware_msgpack = st.one_of(st.binary(max_size=60), packed(bodies), cut(packed(bodies)), packed(link_values),
                             deep(b"\x91", b"", b"\xc0"), deep(b"\x81\xa1k", b"", b"\xc0"),
                             st.sampled_from([b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                                              b"\xdf\xff\xff\xff\xff", b"\xcf" + b"\xff" * 8, b"\xd3" + b"\x80" + b"\x00" * 7]))
frame_blocks = st.one_of(st.binary(max_size=80), firmware_msgpack.map(raw_frame), cut(firmware_msgpack.map(raw_frame)),
                         bodies.map(framed).map(lambda f: f[:-1]))
link_chunks = st.lists(st.one_of(bodies.map(framed), cut(bodies.map(framed)), st.binary(max_size=40),
                                 firmware_msgpack.map(lambda b: raw_frame(b) + b"\x00"), repeated(st.just(b"\x01"), 400)),
                       max_size=12)


def decode_frame(block: bytes) -> None:
    body = framing.decode_frame(block)
    if not (isinstance(body, dict) and isinstance(body.get("t"), str) and isinstance(body.get("n"), int)):
        raise AssertionError(f"decode_frame returned {body!r}")


def deframe(chunks: list[bytes]) -> None:
    deframer = framing.Deframer()
    for chunk in chunks:
        for body in deframer.feed(chunk):
            if not (isinstance(body, dict) and isinstance(body.get("t"), str) and isinstance(body.get("n"), int)):
                raise AssertionError(f"Deframer returned {body!r}")


def endpoint(chunks: list[bytes]) -> None:
    ep = framing.Endpoint()
    ep.send(framing.hello_body("fuzz", []))
    now = 0
    for chunk in chunks:
        ep.receive(chunk, now)
        now += 150
        ep.poll(now)
        ep.take_output()


MCU = "front-end"
MCU_ITEMS = dict(
    zones=[ZoneConfig("north-fence", mcu=MCU, input=0), ZoneConfig("east-wall", mcu=MCU, input=1)],
    buttons=[ButtonConfig("office-panic", mcu=MCU, input=0, hold_ms=300)],
    readers=[ReaderConfig("gate-1", "wiegand", mcu=MCU, input=0), ReaderConfig("desk", "pn532", mcu=MCU, input=1)],
    outputs=[OutputConfig("siren", mcu=MCU, output=0, max_on_s=1.0)],
)


def mcu_bodies(items: list[dict[str, Any]]) -> None:
    """Bodies as the deframer hands them on, acted on by McuLink on the input loop's thread (never started: no port)."""
    emitted: list[Any] = []
    link = McuLink(McuConfig(MCU, "loop://"), emit=lambda kind, source, **f: emitted.append((kind, source, f)),
                   **MCU_ITEMS)  # type: ignore[arg-type]
    now = 100.0
    for body in items:
        link._on_frame(body, now)  # noqa: SLF001  # what the link thread calls for each frame
        now += 0.2
        link.tick(now)
    link.tick(now + 5)


script_lines = st.lists(st.one_of(
    st.builds(lambda w, t, c, a: f"{w} {t} {c} {' '.join(a)}", st.sampled_from(["at", "after", "link", "repeat", "x"]),
              st.one_of(st.sampled_from(["0", "1.5", "-1", "nan", "inf", "1e400", "1_0", "0x1"]), st.text(max_size=5)),
              st.sampled_from(["zone", "adc", "button", "tap", "wiegand", "wiegand-raw", "dropout", "unplug", "reboot",
                               "noise", "drop", "x"]),
              st.lists(st.one_of(st.sampled_from(["0", "1", "26", "34", "press", "hold", "hex", "tx", "rx", "alarm",
                                                  "0x" + "f" * 40, "9" * 5000, "04A1B2C3", "-1", "0b1", "1e9", "FF" * 11]),
                                 st.text(max_size=6)), max_size=4)),
    st.text(max_size=40)), max_size=8).map("\n".join)


# -- configuration and plan files -------------------------------------------------------

AGENT_TOML = """agent_id = "school-9-gate-1"
data_dir = "/var/lib/gridpatrol"
[mqtt]
host = "127.0.0.1"
port = 1883
keepalive_s = 15
resend_s = 10
tls_ca = "ca.crt"
tls_cert = "a.crt"
tls_key = "a.key"
username = "u"
password = "p"
[gpio]
pin_factory = "mock"
sim_socket = "/run/gridpatrol/sim.sock"
status_led = "status-led"
[outbox]
max_events = 50000
warn_fraction = 0.8
[telemetry]
interval_s = 30
[[zone]]
name = "north-fence"
pin = 17
contact = "nc"
debounce_ms = 50
siren = "siren"
[[mcu]]
name = "front-end"
port = "/dev/ttyACM0"
baudrate = 115200
[[zone]]
name = "east-wall"
mcu = "front-end"
input = 1
[[button]]
name = "office-panic"
pin = 27
hold_ms = 1500
silent = false
siren = "siren"
indicator = "panic-led"
[[output]]
name = "siren"
pin = 22
max_on_s = 180
active_high = true
[[output]]
name = "panic-led"
pin = 23
[[output]]
name = "status-led"
pin = 24
[[reader]]
name = "gate-1"
port = "/dev/serial0"
protocol = "rdm6300"
[[reader]]
name = "desk"
mcu = "front-end"
input = 0
protocol = "wiegand"
"""
CENTRAL_TOML = district.central_toml(data_dir="/var/lib/gridpatrol", mqtt_port=1883, web_listen="127.0.0.1:8080") + """
[homeassistant]
enabled = true
discovery_prefix = "homeassistant"
"""
PLAN_TOML = district.plan_toml(district.build(8, now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), minutes=10))
PLAN_TOML = PLAN_TOML.replace("timezone", 'effective = "2026-01-01"\ntimezone', 1)
TOML_LITERALS = st.one_of(
    st.integers().map(str), st.integers(min_value=2**63 - 2, max_value=10**400).map(str), st.floats().map(lambda f: repr(f).replace("inf", "inf").replace("nan", "nan")),
    st.sampled_from(["[" * 40 + "]" * 40, "[" * 700 + "]" * 700, "{ a = " * 300 + "1" + " }" * 300, "[0x" + "f" * 4000 + "]",
                     "{ a = 0x" + "f" * 4000 + " }", "[[1, [2, [3]]]]", '"fengze\\n"', '"67003B51C6\\n"',
                     '"school-9-gate-1\\n"', '"siren\\n"', '"front-end\\n"', '"a\\n"']),
    st.sampled_from(["9" * 400, "9" * 5000, "0x" + "f" * 4000, "-" + "9" * 30, "0x7fffffffffffffff", "0o777", "0b1", "1_000", "nan", "inf", "-inf", "1e400",
                     "-0.0", "true", "false", '""', "''", '"\\u0000"', '"\\t"', "[]", "[1, 2]", '["a", 1]', "[[]]", "{}",
                     "{ a = 1 }", "{ id = \"x\" }", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", "1979-05-27T07:32:00",
                     '"Asia/Shanghai"', '"Mars/Olympus"', '"UTC"', '"sqlite://"', '"postgresql://x"', '"127.0.0.1:0"',
                     '"[::1]:8080"', '":80"', '"a" ', '"strict"', '"any"', '"grid"', '"00:00"', '"24:00"', '"23:59"']),
    st.text(max_size=20).map(json.dumps), st.sampled_from(ODD_TEXT).map(json.dumps),
)
toml_lines = st.one_of(st.text(max_size=30), st.builds(lambda k, v: f"{k} = {v}", st.from_regex(r"\A[a-z_]{1,12}\Z"), TOML_LITERALS),
                       st.sampled_from(["[mqtt]", "[[zone]]", "[[route]]", "[[team]]", "[gpio]", "[web]", "[x]", "[[x]]",
                                        "unit = []", "agent = [ { id = 1 } ]", "checkpoint = [ {} ]", "[store]"]))


def mutated_toml(template: str) -> st.SearchStrategy[str]:
    """The template with a few lines' values replaced, lines dropped, doubled or added."""
    lines = template.splitlines()

    @st.composite
    def build(draw: Any) -> str:
        out = list(lines)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out)))
            op = draw(st.sampled_from(["value", "value", "value", "drop", "double", "add"]))
            if op == "add" or i == len(out):
                out.insert(i, draw(toml_lines))
            elif op == "drop":
                del out[i]
            elif op == "double":
                out.insert(i, out[i])
            elif " = " in out[i]:
                key, _, _ = out[i].partition(" = ")
                out[i] = f"{key} = {draw(TOML_LITERALS)}"
        return "\n".join(out)

    return build()


def toml_inputs(template: str) -> st.SearchStrategy[bytes | str]:
    return st.one_of(mutated_toml(template), mutated_toml(template), mutated_toml(template).map(str.encode),
                     st.binary(max_size=100), st.text(max_size=100), cut(st.just(template.encode())))


def agent_config(data: bytes | str) -> None:
    config = parse_agent_config(data, source="agent.toml")
    names = [config.agent_id, *(i.name for i in (*config.zones, *config.buttons, *config.outputs, *config.readers))]
    for name in names:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
            raise AssertionError(f"agent config accepted the name {name!r}")


def central_config(data: bytes | str) -> None:
    parse_central_config(data, source="central.toml")


def plan_bytes(data: bytes | str) -> None:
    check_plan(parse_plan_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")))


PLAN_DATA = __import__("tomllib").loads(PLAN_TOML)
plan_values = st.one_of(values, st.dates(), st.times(), st.datetimes(), st.integers(min_value=2**63, max_value=16**4000),
                        st.sampled_from(
    ["grid", "street", "community", "district", "strict", "any", "start-then-any", "00:00", "24:00", "12:60", "fengze",
     "chengzhou-g1", "cp-chengzhou-school-1", "chengzhou-night", "2026-02-30", "67003B51C6"]))


@st.composite
def mutated_tree(draw: Any, tree: Any) -> Any:
    """A deep copy of ``tree`` with a few values anywhere in it replaced, removed or added."""
    out = _copy(tree)
    for _ in range(draw(st.integers(1, 4))):
        node = out
        while True:
            keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and draw(st.integers(0, 3)):
                node = child
                continue
            op = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
            if op == "replace":
                node[key] = draw(plan_values)
            elif op == "drop":
                del node[key]
            elif isinstance(node, dict):
                node[draw(st.text(max_size=10))] = draw(plan_values)
            else:
                node.append(draw(plan_values))
            break
    return out


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy(v) for v in tree]
    return tree


def check_plan(plan: Any) -> None:
    for kind in ("units", "agents", "checkpoints", "teams", "routes"):
        for item in getattr(plan, kind):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", item.id):
                raise AssertionError(f"the plan accepted the {kind[:-1]} id {item.id!r}")
    for team in plan.teams:
        for member in team.members:
            if member.tag is None and member.card is None:
                raise AssertionError(f"the plan accepted the member {member.name!r} with neither tag nor card")
            if member.tag is not None and not re.fullmatch(r"[0-9A-F]{2,32}", member.tag):
                raise AssertionError(f"the plan accepted the tag {member.tag!r}")
            if member.card is not None and not re.fullmatch(r"[0-9]{10}|[0-9]{1,3},[0-9]{1,5}", member.card):
                raise AssertionError(f"the plan accepted the card {member.card!r}")


def plan_data(data: Any) -> None:
    check_plan(parse_plan(data))


# -- the dashboard over HTTP ------------------------------------------------------------

PAGE_PATHS = ["/", "/agents", "/units", "/events", "/report", "/routes/night-loop", "/fragments/alarm/1", "/login", "/lang",
              "/healthz", "/static/app.css", "/static/../app.py", "/logout", "/api/agents", "/api/alarms", "/api/alarms/1",
              "/api/events", "/api/units", "/api/completion", "/api/alarms/1/ack", "/nowhere", "//", "/api/"]
TEMPLATED = ["/routes/{}", "/fragments/alarm/{}", "/api/alarms/{}", "/static/{}", "/{}", "/api/{}"]
PARAMS = ["agent", "kind", "source", "since", "until", "limit", "date", "tier", "all", "next", "to", "unit", "route", "day",
          "from", "format", "lang", "q"]
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
param_values = st.one_of(st.sampled_from(ODD_TEXT), st.sampled_from([str(i) for i in ODD_INTS]), st.text(max_size=30),
                         st.integers().map(str), st.sampled_from(["2026-01-01", "2026-13-01", "0001-01-01", "9999-12-31",
                                                                 "1999-12-31", "2100-01-01", "-1", "1.5", "true", "zh-CN",
                                                                 "en", "//evil.example", "/\\evil", "http://x", "/agents"]))
segments = st.one_of(st.text(max_size=20), st.sampled_from([str(i) for i in ODD_INTS]), st.sampled_from(ODD_TEXT))
SESSIONS = ["user", "user", "user", "anon", "none", "garbage"]
ORIGINS = [None, "http://testserver", "https://testserver", "http://evil.example", "null", ""]


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


http_gets = st.fixed_dictionaries({
    "path": st.one_of(st.sampled_from(PAGE_PATHS), st.builds(lambda t, s: t.format(_quote(s)), st.sampled_from(TEMPLATED),
                                                             segments)),
    "query": st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), st.text(max_size=8)), param_values), max_size=5),
    "raw_query": st.one_of(st.just(""), st.sampled_from(["%zz", "%00", "%FF%FE", "a=%", "&&&", "=", "a=1&a=2&a=3", "limit=1e3"])),
    "session": st.sampled_from(SESSIONS), "garbage": ascii_text,
    "headers": st.dictionaries(st.sampled_from(["accept-language", "accept", "x-csrf-token", "origin", "referer",
                                                "content-type", "x-forwarded-for", "range", "if-none-match"]),
                               ascii_text, max_size=3),
})
http_forms = st.fixed_dictionaries({
    "path": st.sampled_from(["/login", "/login", "/logout", "/lang", "/api/alarms/1/ack", "/alarms/1/ack"]),
    "session": st.sampled_from(["anon", "anon", "user", "none", "garbage"]), "garbage": ascii_text,
    "csrf": st.sampled_from(["good", "good", "good", "wrong", "none", "header"]),
    "fields": st.dictionaries(st.one_of(st.sampled_from(["name", "password", "next", "csrf"]), st.text(max_size=8)),
                              st.one_of(st.sampled_from(["duty", "lin", "", "correct horse battery", "//evil", "/agents"]),
                                        st.text(max_size=40), st.sampled_from(ODD_TEXT)), max_size=6),
    "body": st.one_of(st.none(), st.binary(max_size=200), repeated(st.just(b"name=a&"), 5000)),
    "content_type": st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                                     "multipart/form-data", "text/plain", "application/json", ""]),
    "origin": st.sampled_from(ORIGINS),
})
http_acks = st.fixed_dictionaries({
    "path": st.builds(lambda t, i: t.format(i), st.sampled_from(["/api/alarms/{}/ack", "/alarms/{}/ack"]),
                      st.one_of(st.integers(0, 60).map(str), segments.map(_quote))),
    "session": st.sampled_from(["user", "user", "user", "anon", "none", "garbage"]), "garbage": ascii_text,
    "csrf": st.sampled_from(["header", "form", "wrong", "none"]),
    "origin": st.sampled_from(ORIGINS), "referer": st.sampled_from([None, "http://testserver/", "http://evil.example/x", "x"]),
    "body": st.one_of(st.none(), st.binary(max_size=100)),
})


class HttpWorld:
    """The real dashboard app (tests/web's world: real store, alarm book, plan) behind Starlette's TestClient."""

    def __enter__(self) -> HttpWorld:
        from starlette.testclient import TestClient

        from central.web.auth import SESSION_COOKIE, LoginLimiter
        from tests.web.conftest import PASSWORD, make_world

        self._tmp = tempfile.TemporaryDirectory(prefix="gridpatrol-fuzz-")
        self.world = make_world(Path(self._tmp.name))
        for i in range(50):
            self.world.raise_alarm("school-9-gate-1", f"button-{i}")
        # Loose limits: each fuzzed login reaches the password check instead of a 429.
        app = self.world.build_app(limiter=LoginLimiter(user_failures=10**9, ip_failures=10**9))
        self.client = TestClient(app, base_url="http://testserver", raise_server_exceptions=True)
        self.client.__enter__()
        self.cookie_name = SESSION_COOKIE
        page = self.client.get("/login")
        self.anon = (self.client.cookies[SESSION_COOKIE], _csrf(page.text))
        self.client.post("/login", data={"csrf": self.anon[1], "name": "duty", "password": PASSWORD, "next": "/"},
                         follow_redirects=False)
        user_cookie = self.client.cookies[SESSION_COOKIE]
        self.user = (user_cookie, _csrf(self.client.get("/").text))
        self.client.cookies.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(None, None, None)
        self.world.alarms.close()
        self._tmp.cleanup()

    def _session(self, x: dict[str, Any]) -> tuple[dict[str, str], str]:
        cookie, csrf = {"user": self.user, "anon": self.anon}.get(x["session"], ("", ""))
        if x["session"] == "garbage":
            cookie = x["garbage"].replace(";", "")
        headers = {"cookie": f"{self.cookie_name}={cookie}"} if x["session"] != "none" else {}
        return headers, csrf

    def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None = None) -> int:
        self.client.cookies.clear()
        r = self.client.request(method, url, headers=headers, content=content, follow_redirects=False)
        if r.status_code >= 500:
            raise ServerError(f"{method} {url.split('?')[0][:40]} answered {r.status_code}")
        return r.status_code

    def get(self, x: dict[str, Any]) -> int:
        if x["path"] == "/api/stream":
            return 200  # the live stream never ends; tests/web covers it
        headers, _ = self._session(x)
        headers.update(x["headers"])
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in x["query"])
        if x["raw_query"]:
            query = f"{query}&{x['raw_query']}" if query else x["raw_query"]
        return self.send("GET", x["path"] + (f"?{query}" if query else ""), headers)

    def form(self, x: dict[str, Any]) -> int:
        from urllib.parse import urlencode
        headers, csrf = self._session(x)
        fields = dict(x["fields"])
        if x["csrf"] == "good":
            fields["csrf"] = csrf
        elif x["csrf"] == "wrong":
            fields["csrf"] = csrf[::-1] or "x"
        elif x["csrf"] == "header":
            headers["x-csrf-token"] = csrf
        body = x["body"] if x["body"] is not None else urlencode(
            {k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}).encode()
        if x["content_type"]:
            headers["content-type"] = x["content_type"]
        if x["origin"] is not None:
            headers["origin"] = x["origin"]
        return self.send("POST", x["path"], headers, body)

    def ack(self, x: dict[str, Any]) -> int:
        headers, csrf = self._session(x)
        body = x["body"]
        if x["csrf"] == "header":
            headers["x-csrf-token"] = csrf
        elif x["csrf"] == "wrong":
            headers["x-csrf-token"] = "x" + csrf
        elif x["csrf"] == "form" and body is None:
            body = f"csrf={csrf}".encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        for name in ("origin", "referer"):
            if x[name] is not None:
                headers[name] = x[name]
        return self.send("POST", x["path"], headers, body)


class ServerError(Exception):
    """The app answered 5xx."""


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    if match is None:
        raise RuntimeError("the page has no CSRF field")
    return match.group(1)


# -- the run --------------------------------------------------------------------------

OUR_PACKAGES = ("wire", "agent", "central", "firmware_bridge", "gridpatrol")
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    call: Callable[[Any], Any]
    documented: tuple[type[BaseException], ...]  # for HTTP: 4xx answers


@dataclass
class Tally:
    tried: int = 0
    documented: int = 0
    crashes: int = 0
    seconds: float = 0.0
    first: dict[str, Any] | None = None  # crash kind -> the first input of that kind

    @property
    def ok(self) -> int:
        """Inputs the entry point accepted, with a result that keeps its promise."""
        return self.tried - self.documented - self.crashes


class ErrorLog(logging.Handler):
    """Errors our code logs while handling one input: an exception that was only logged is a crash too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in OUR_PACKAGES:
            self.records.append(record)


ERRORS = ErrorLog()


def crash_site(exc: BaseException) -> str:
    """The innermost frame of ours in the traceback: file:line of the crash."""
    site = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        try:
            rel = path.resolve().relative_to(REPO)
        except ValueError:
            continue
        if rel.parts[0] in OUR_PACKAGES or rel.parts[0] == "bench":
            site = f"{rel}:{frame.lineno}"
    return site


def classify(target: Target, x: Any) -> str:
    """'ok', 'documented', or the kind of crash."""
    ERRORS.records.clear()
    try:
        result = target.call(x)
    except target.documented:
        outcome = "documented"
    except ServerError as exc:
        outcome = f"{exc}"
    except AssertionError as exc:
        outcome = f"wrong result: {str(exc)[:60]}"
    except Exception as exc:  # noqa: BLE001  # anything else is what we are looking for
        outcome = f"{type(exc).__name__} at {crash_site(exc)}"
    else:
        outcome = "documented" if isinstance(result, int) and 400 <= result < 500 else "ok"
    if ERRORS.records and (outcome in ("ok", "documented")):
        record = ERRORS.records[0]
        outcome = f"logged error from {record.name}: {str(record.msg)[:60]}"
    return outcome


def run(target: Target, examples: int, seed: int) -> Tally:
    tally = Tally(first={})
    assert tally.first is not None

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def body(x: Any) -> None:
        tally.tried += 1
        outcome = classify(target, x)
        if outcome == "documented":
            tally.documented += 1
        elif outcome != "ok":
            tally.crashes += 1
            tally.first.setdefault(outcome, x)  # type: ignore[union-attr]

    started = time.perf_counter()
    body()
    tally.seconds = time.perf_counter() - started
    return tally


def minimal(target: Target, kind: str, fallback: Any) -> Any:
    try:
        return find(target.strategy, lambda x: classify(target, x) == kind,
                    settings=settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        return fallback
    except ValueError:  # hypothesis's own debug line cannot print an integer past 4300 digits
        return fallback


def targets(http: HttpWorld | None) -> list[Target]:
    out = [
        Target("wire.codec.unpack", msgpack_payloads(ALL_MAPS), unpack, (DecodeError,)),
        *[Target(f"wire {name}.from_payload", msgpack_payloads(templates), parse, (DecodeError,))
          for name, (parse, templates) in MSGPACK_KINDS.items()],
        Target("wire AgentStatus.from_payload", json_payloads([STATUS]), AgentStatus.from_payload, (DecodeError,)),
        Target("wire CentralStatus.from_payload", json_payloads([CENTRAL]), CentralStatus.from_payload, (DecodeError,)),
        Target("wire.topics.parse", topic_names, parse_topic, (DecodeError,)),
        Target("central inbound Decoder.decode", central_inputs, decode_central, ()),
        Target("rdm6300 Rdm6300Parser.feed", rdm_chunks, feed_rdm, ()),
        Target("pn532 FrameReader.feed/expire", pn_chunks, feed_pn532, ()),
        Target("pn532 parse_target_uid", target_uids, parse_target_uid, (ReaderFrameError,)),
        Target("wiegand decode_wiegand", wiegand_args, wiegand, (WiegandError,)),
        Target("framing decode_frame", frame_blocks, decode_frame, (framing.FrameError,)),
        Target("framing unpack (msgpack subset)", firmware_msgpack, framing.unpack, (framing.FrameError,)),
        Target("framing Deframer.feed", link_chunks, deframe, ()),
        Target("framing Endpoint.receive/poll", link_chunks, endpoint, ()),
        Target("agent McuLink frame bodies", st.lists(bodies, max_size=10), mcu_bodies, ()),
        Target("agent simsocket parse_command", sim_lines, sim_command, (SimCommandError,)),
        Target("agent config parse_config", toml_inputs(AGENT_TOML), agent_config, (AgentConfigError,)),
        Target("central config parse_config", toml_inputs(CENTRAL_TOML), central_config, (CentralConfigError,)),
        Target("central plan parse_plan_bytes", toml_inputs(PLAN_TOML), plan_bytes, (PlanError,)),
        Target("central plan parse_plan (registry form)", mutated_tree(PLAN_DATA), plan_data, (PlanError,)),
        Target("mcu-sim parse_script", script_lines, parse_script, (ScriptError,)),
    ]
    if http is not None:
        out += [
            Target("http GET paths, queries, headers", http_gets, http.get, ()),
            Target("http POST forms (login, logout, lang)", http_forms, http.form, ()),
            Target("http POST alarm ack (CSRF, origin)", http_acks, http.ack, ()),
        ]
    return out


def table(rows: list[tuple[str, Tally]]) -> str:
    lines = ["| target | inputs tried | documented errors | ok | crashes | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in rows:
        lines.append(f"| {name} | {t.tried:,} | {t.documented:,} | {t.ok:,} | {t.crashes} | {t.seconds:.1f} |")
    total = Tally(tried=sum(t.tried for _, t in rows), documented=sum(t.documented for _, t in rows),
                  crashes=sum(t.crashes for _, t in rows), seconds=sum(t.seconds for _, t in rows))
    lines.append(f"| **all {len(rows)} targets** | **{total.tried:,}** | {total.documented:,} | {total.ok:,} | **{total.crashes}** |"
                 f" {total.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="inputs per target")
    parser.add_argument("--only", nargs="*", help="targets whose name contains any of these")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="also write the table and findings to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL + 1)  # nothing on the terminal; ERRORS sees what matters
    root = logging.getLogger()
    root.addHandler(ERRORS)
    root.setLevel(logging.ERROR)
    wanted = [t for t in targets(None) if not args.only or any(o in t.name for o in args.only)]
    want_http = not args.only or any(o in "http" or "http" in o for o in args.only)
    rows: list[tuple[str, Tally]] = []
    findings: list[str] = []
    started = time.perf_counter()
    with (HttpWorld() if want_http else _Nothing()) as http:
        if http is not None:
            wanted += [t for t in targets(http)[len(targets(None)):] if not args.only or any(o in t.name for o in args.only)]
        for target in wanted:
            tally = run(target, args.examples, args.seed)
            rows.append((target.name, tally))
            print(f"{target.name}: {tally.tried} tried, {tally.documented} documented errors, {tally.crashes} crashes,"
                  f" {tally.seconds:.1f} s", file=sys.stderr, flush=True)
            for kind, first in (tally.first or {}).items():
                small = minimal(target, kind, first)
                findings.append(f"- **{target.name}**: {kind}; minimal input: `{_short(small)}`")
    wall = time.perf_counter() - started
    text = table(rows) + (f"\n\nWall time {wall / 60:.1f} min (the world for HTTP and the minimal inputs included);"
                          f" seed {args.seed}, up to {args.examples:,} inputs per target, hypothesis {hypothesis.__version__},"
                          f" Python {platform.python_version()}.")
    text += ("\n\nFindings:\n" + "\n".join(findings)) if findings else "\n\nNo crashes."
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if findings else 0


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


TEMPLATE_LINES = frozenset(line for doc in (AGENT_TOML, CENTRAL_TOML, PLAN_TOML) for line in doc.splitlines())


def _short(x: Any) -> str:
    if isinstance(x, bytes) and len(x) > 300:
        try:
            x = x.decode()
        except UnicodeDecodeError:
            pass
    if isinstance(x, str) and len(x) > 300 and sum(line in TEMPLATE_LINES for line in x.splitlines()) > 5:
        changed = [line for line in x.splitlines() if line not in TEMPLATE_LINES]
        return "the template with lines " + _short(changed)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # an input may hold an integer of any size; the report shows its start
    try:
        text = repr(x)
    finally:
        sys.set_int_max_str_digits(limit)
    return text if len(text) <= 300 else text[:300] + f"... ({len(text)} characters)"


if __name__ == "__main__":
    sys.exit(main())
