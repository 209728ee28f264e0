"""Every configuration mistake: exit status 2 and one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config, parse_config
from tests.support import run_cli

GOOD = """
agent_id = "school-9-gate-1"
data_dir = "/var/lib/gridpatrol"

[mqtt]
host = "127.0.0.1"
port = 1883
keepalive_s = 15

[gpio]
pin_factory = "mock"
sim_socket = "/run/gridpatrol/sim.sock"
status_led = "status-led"

[[zone]]
name = "north-fence"
pin = 17
contact = "nc"
debounce_ms = 50
siren = "siren"

[[mcu]]
name = "front-end"
port = "/dev/ttyACM0"

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
"""


def test_designs_example_is_accepted() -> None:
    c = parse_config(GOOD, source="agent.toml")
    assert c.agent_id == "school-9-gate-1"
    assert [z.name for z in c.zones] == ["north-fence", "east-wall"]
    assert c.zones[1].mcu == "front-end" and c.zones[1].input == 1
    assert c.buttons[0].hold_ms == 1500 and c.buttons[0].indicator == "panic-led"
    assert c.output("siren").max_on_s == 180.0
    assert c.output("panic-led").max_on_s is None  # an indicator may stay lit until acknowledged
    assert c.mqtt.resend_s == 10.0
    assert c.readers[0].protocol == "rdm6300"


MISTAKES = [
    # (description, edit applied to GOOD, expected message after "agent.toml: ")
    ("unknown key", lambda s: s.replace('contact = "nc"', 'contact = "nc"\ncolour = "red"'), "zone[0].colour: unknown key"),
    ("unknown top-level key", lambda s: "agent_name = 'x'\n" + s, "agent_name: unknown key"),
    ("missing key", lambda s: s.replace('agent_id = "school-9-gate-1"\n', ""), "agent_id: missing key"),
    ("missing pin", lambda s: s.replace("pin = 27\n", ""), "button[0].pin: missing key (or give mcu and input)"),
    ("duplicate pin", lambda s: s.replace("pin = 27", "pin = 17"), "button[0].pin: pin 17 is already used by zone[0]"),
    ("pin used by an output and an input", lambda s: s.replace("pin = 24", "pin = 17"), "zone[0].pin: pin 17 is already used by output[2]"),
    ("duplicate name", lambda s: s.replace('name = "east-wall"', 'name = "north-fence"'), "zone[1].name: name 'north-fence' is already used by zone[0]"),
    ("bad name", lambda s: s.replace('name = "north-fence"', 'name = "North Fence"'), "zone[0].name: 'North Fence' is not a valid name ([a-z0-9_-], 1 to 64 characters)"),
    ("bad agent id", lambda s: s.replace('"school-9-gate-1"', '"School 9"'), "agent_id: 'School 9' is not a valid agent id ([a-z0-9-], at most 64 characters)"),
    ("reserved agent id", lambda s: s.replace('"school-9-gate-1"', '"central"'), "agent_id: 'central' is reserved for central"),
    ("pin out of range", lambda s: s.replace("pin = 17", "pin = 40"), "zone[0].pin: pin 40 is not a BCM GPIO number (0 to 27)"),
    ("wrong type", lambda s: s.replace("port = 1883", 'port = "1883"'), "mqtt.port: must be an integer, not str"),
    ("boolean for a number", lambda s: s.replace("debounce_ms = 50", "debounce_ms = true"), "zone[0].debounce_ms: must be an integer, not a boolean"),
    ("bad contact", lambda s: s.replace('contact = "nc"', 'contact = "open"'), "zone[0].contact: 'open' is not one of nc, no"),
    ("unknown siren", lambda s: s.replace('siren = "siren"\n\n[[mcu]]', 'siren = "horn"\n\n[[mcu]]'), "zone[0].siren: no [[output]] is named 'horn'"),
    ("unknown mcu", lambda s: s.replace('mcu = "front-end"', 'mcu = "back-end"'), "zone[1].mcu: no [[mcu]] is named 'back-end'"),
    ("silent button with siren", lambda s: s.replace("silent = false", "silent = true"), "button[0].siren: a silent button never drives a siren"),
    ("unknown protocol", lambda s: s.replace('protocol = "rdm6300"', 'protocol = "hid-prox"'), "reader[0].protocol: 'hid-prox' is not one of rdm6300, pn532, wiegand"),
    ("sim socket without mock pins", lambda s: s.replace('pin_factory = "mock"', 'pin_factory = "lgpio"'), 'gpio.sim_socket: needs gpio.pin_factory = "mock"'),
    ("unknown status led", lambda s: s.replace('status_led = "status-led"', 'status_led = "led"'), "gpio.status_led: no [[output]] is named 'led'"),
    ("zero max_on_s", lambda s: s.replace("max_on_s = 180", "max_on_s = 0"), "output[0].max_on_s: must be greater than 0, not 0.0"),
    ("unknown feedback output", lambda s: s.replace('protocol = "rdm6300"', 'protocol = "rdm6300"\nfeedback = "buzzer"'),
     "reader[0].feedback: no [[output]] is named 'buzzer'"),
    ("status led as feedback", lambda s: s.replace('protocol = "rdm6300"', 'protocol = "rdm6300"\nfeedback = "status-led"'),
     "reader[0].feedback: output 'status-led' is the status LED"),
    ("table expected", lambda s: s.replace("[mqtt]\n", 'mqtt = "broker"\n[mqtt_unused]\n'), "mqtt: must be a table, not str"),
]


@pytest.mark.parametrize(("edit", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_file_and_key(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        parse_config(edit(GOOD), source="agent.toml")
    assert str(info.value) == f"agent.toml: {message}"


def test_toml_syntax_error_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^agent\.toml: not valid TOML: .*line 2"):
        parse_config('agent_id = "a"\nport = \n', source="agent.toml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"^/nonexistent/agent\.toml: cannot read: No such file or directory$"):
        load_config("/nonexistent/agent.toml")


@pytest.mark.parametrize(("edit", "message"), [MISTAKES[4][1:], MISTAKES[0][1:], MISTAKES[2][1:]], ids=["duplicate-pin", "unknown-key", "missing-key"])
def test_agent_command_exits_2_with_one_line(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.toml"
    path.write_text(edit(GOOD))
    result = run_cli("agent", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"gridpatrol: {path}: {message}\n"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'agent_id = "\xff"\n')
    result = run_cli("agent", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"gridpatrol: {path}: not UTF-8 text: invalid start byte at byte 12")
    assert result.stderr.count("\n") == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, source="fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml: ")
        assert "\n" not in str(exc)


_KEYS = st.sampled_from(["agent_id", "data_dir", "mqtt", "gpio", "zone", "button", "output", "reader", "mcu", "outbox", "telemetry", "pin", "name"])
_VALUES = st.recursive(
    st.one_of(st.integers(-5, 40), st.booleans(), st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_structured_garbage_never_crashes(doc: dict) -> None:  # type: ignore[type-arg]
    import tomllib

    def dump(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(dump(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k} = {dump(v)}" for k, v in value.items()) + "}"
        raise TypeError(value)

    text = "\n".join(f"{k} = {dump(v)}" for k, v in doc.items())
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # our dumper's corner cases; the text fuzz above covers bad TOML
    try:
        parse_config(text, source="fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc)


# Found by bench/fuzz.py: TOML integers of any size reached float() (OverflowError)
# and message formatting (ValueError past 4300 digits) instead of a ConfigError.
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("keepalive_s = 15", "keepalive_s = 15\nresend_s = 1" + "0" * 400),
         "mqtt.resend_s: is out of range (TOML integers are 64-bit)"),
        (lambda s: s.replace("port = 1883", "port = 0x" + "f" * 4000), "mqtt.port: is out of range (TOML integers are 64-bit)"),
        (lambda s: s.replace("port = 1883", "port = -9223372036854775809"),
         "mqtt.port: is out of range (TOML integers are 64-bit)"),
        (lambda s: s.replace("port = 1883", "port = " + "9" * 5000),
         "not valid TOML: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
         "use sys.set_int_max_str_digits() to increase the limit"),
    ],
    ids=["huge-int-for-a-float", "huge-hex-int", "below-int64", "more-than-4300-digits"],
)
def test_integers_beyond_64_bits_are_config_errors(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        parse_config(edit(GOOD), source="agent.toml")
    assert str(info.value) == f"agent.toml: {message}"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('"school-9-gate-1"', '"school-9-gate-1\\n"'),
         "agent_id: 'school-9-gate-1\\n' is not a valid agent id ([a-z0-9-], at most 64 characters)"),
        (lambda s: s.replace('name = "north-fence"', 'name = "north-fence\\n"'),
         "zone[0].name: 'north-fence\\n' is not a valid name ([a-z0-9_-], 1 to 64 characters)"),
    ],
    ids=["agent-id", "zone-name"],
)
def test_a_final_newline_makes_a_name_invalid(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    """Found by bench/fuzz.py's checks: the patterns' "$" also matched before a final newline."""
    with pytest.raises(ConfigError) as info:
        parse_config(edit(GOOD), source="agent.toml")
    assert str(info.value) == f"agent.toml: {message}"
