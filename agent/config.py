"""Agent configuration: TOML into frozen dataclasses, checked at start-up.

Every mistake raises :class:`ConfigError` with one line naming the file and the
key path at fault (``agent.toml: zone[1].pin: ...``); the command line turns it
into exit status 2.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from gridpatrol.base.errors import ConfigError
from gridpatrol.base.tomlconfig import Table, non_negative, one_of, opt_path, parse_toml, positive, read_bytes
from gridpatrol.base.tomlconfig import port as port_number
from wire.topics import CENTRAL_ID, is_valid_agent_id

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?\Z")  # \Z: "$" would also match before a final newline
BCM_PINS = range(0, 28)
READER_PROTOCOLS = ("rdm6300", "pn532", "wiegand")
CONTACTS = ("nc", "no")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 15
    resend_s: float = 10.0
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class GpioConfig:
    pin_factory: str | None = None
    sim_socket: Path | None = None
    status_led: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """A perimeter loop: on a GPIO ``pin``, or ``input`` N of microcontroller ``mcu``."""

    name: str
    pin: int | None = None
    mcu: str | None = None
    input: int | None = None
    contact: str = "nc"
    debounce_ms: int = 50
    siren: str | None = None


@dataclass(frozen=True, slots=True)
class ButtonConfig:
    name: str
    pin: int | None = None
    mcu: str | None = None
    input: int | None = None
    hold_ms: int = 1500
    silent: bool = False
    siren: str | None = None
    indicator: str | None = None


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """A siren, strobe or LED: on a GPIO ``pin``, or ``output`` N of ``mcu``."""

    name: str
    pin: int | None = None
    mcu: str | None = None
    output: int | None = None
    max_on_s: float | None = None  # None: no limit (indicators, status LEDs); sirens set one
    active_high: bool = True


@dataclass(frozen=True, slots=True)
class McuConfig:
    name: str
    port: str
    baudrate: int = 115200


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """An RFID checkpoint reader on a serial ``port``, or a Wiegand input of an ``mcu``."""

    name: str
    protocol: str
    port: str | None = None
    mcu: str | None = None
    input: int | None = None
    baudrate: int | None = None
    feedback: str | None = None  # an [[output]] (GPIO) that answers each tap: agent/feedback.py


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_events: int = 100_000
    warn_fraction: float = 0.8


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent_id: str
    data_dir: Path
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    zones: tuple[ZoneConfig, ...] = ()
    buttons: tuple[ButtonConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    mcus: tuple[McuConfig, ...] = ()
    readers: tuple[ReaderConfig, ...] = ()
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    source: str = "<config>"
    config_hash: str = ""

    def output(self, name: str) -> OutputConfig:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)


# -- reading ------------------------------------------------------------------


def _name(value: str) -> str | None:
    if not NAME_RE.match(value):
        return f"{value!r} is not a valid name ([a-z0-9_-], 1 to 64 characters)"
    return None


def _bcm(value: int) -> str | None:
    return None if value in BCM_PINS else f"pin {value} is not a BCM GPIO number (0 to 27)"


def load_config(path: str | Path) -> AgentConfig:
    """Read and check an agent configuration file."""
    return parse_config(read_bytes(path, ConfigError), source=str(path))


def parse_config(data: bytes | str, *, source: str = "<config>") -> AgentConfig:
    """Check an agent configuration given as TOML text."""
    if isinstance(data, str):
        data = data.encode()
    raw, fail = parse_toml(data, source=source, error=ConfigError)
    top = Table(raw, "", fail)

    def agent_id_check(value: str) -> str | None:
        if value == CENTRAL_ID:
            return f"{value!r} is reserved for central"
        if not is_valid_agent_id(value):
            return f"{value!r} is not a valid agent id ([a-z0-9-], at most 64 characters)"
        return None

    agent_id = top.get("agent_id", str, check=agent_id_check)
    data_dir = Path(top.get("data_dir", str, check=lambda v: None if v else "must not be empty"))

    mqtt_t = Table(top.get("mqtt", dict, {}), "mqtt", fail)
    mqtt = MqttConfig(
        host=mqtt_t.get("host", str, "127.0.0.1"),
        port=mqtt_t.get("port", int, 1883, check=port_number),
        keepalive_s=mqtt_t.get("keepalive_s", int, 15, check=lambda v: None if 2 <= v <= 3600 else f"{v} is out of range (2 to 3600)"),
        resend_s=mqtt_t.get("resend_s", float, 10.0, check=positive),
        tls_ca=opt_path(mqtt_t.get("tls_ca", str, None)),
        tls_cert=opt_path(mqtt_t.get("tls_cert", str, None)),
        tls_key=opt_path(mqtt_t.get("tls_key", str, None)),
        username=mqtt_t.get("username", str, None),
        password=mqtt_t.get("password", str, None),
    )
    mqtt_t.done()
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        raise fail("mqtt.tls_cert", "tls_cert and tls_key go together")

    gpio_t = Table(top.get("gpio", dict, {}), "gpio", fail)
    gpio = GpioConfig(
        pin_factory=gpio_t.get("pin_factory", str, None),
        sim_socket=opt_path(gpio_t.get("sim_socket", str, None)),
        status_led=gpio_t.get("status_led", str, None),
    )
    gpio_t.done()
    if gpio.sim_socket is not None and gpio.pin_factory != "mock":
        raise fail("gpio.sim_socket", 'needs gpio.pin_factory = "mock"')

    names: dict[str, str] = {}  # name -> where it was declared
    pins: dict[int, str] = {}

    def claim_name(path: str, name: str) -> None:
        if name in names:
            raise fail(f"{path}.name", f"name {name!r} is already used by {names[name]}")
        names[name] = path

    def claim_pin(path: str, pin: int) -> None:
        if pin in pins:
            raise fail(f"{path}.pin", f"pin {pin} is already used by {pins[pin]}")
        pins[pin] = path

    mcus = []
    for t in top.items("mcu"):
        m = McuConfig(
            name=t.get("name", str, check=_name),
            port=t.get("port", str, check=lambda v: None if v else "must not be empty"),
            baudrate=t.get("baudrate", int, 115200, check=positive),
        )
        t.done()
        claim_name(t.path, m.name)
        mcus.append(m)
    mcu_names = {m.name for m in mcus}

    def place(t: Table, *, index_key: str) -> tuple[int | None, str | None, int | None]:
        """Either a GPIO pin, or an mcu with an input/output number."""
        pin = t.get("pin", int, None, check=_bcm)
        mcu = t.get("mcu", str, None)
        index = t.get(index_key, int, None, check=non_negative)
        if pin is not None and mcu is not None:
            raise fail(t.key("mcu"), "give either pin or mcu, not both")
        if mcu is not None:
            if mcu not in mcu_names:
                raise fail(t.key("mcu"), f"no [[mcu]] is named {mcu!r}")
            if index is None:
                raise fail(t.key(index_key), "missing key (needed with mcu)")
        elif pin is None:
            raise fail(t.key("pin"), "missing key (or give mcu and " + index_key + ")")
        elif index is not None:
            raise fail(t.key(index_key), "only goes with mcu")
        return pin, mcu, index

    outputs = []
    for t in top.items("output"):
        name = t.get("name", str, check=_name)
        pin, mcu, index = place(t, index_key="output")
        o = OutputConfig(
            name=name,
            pin=pin,
            mcu=mcu,
            output=index,
            max_on_s=t.get("max_on_s", float, None, check=positive),
            active_high=t.get("active_high", bool, True),
        )
        t.done()
        claim_name(t.path, o.name)
        if pin is not None:
            claim_pin(t.path, pin)
        outputs.append(o)
    output_names = {o.name for o in outputs}

    def output_ref(t: Table, key: str) -> str | None:
        ref = t.get(key, str, None)
        if ref is not None and ref not in output_names:
            raise fail(t.key(key), f"no [[output]] is named {ref!r}")
        return ref

    mcu_inputs: dict[tuple[str, int], str] = {}

    def claim_input(t: Table, mcu: str | None, index: int | None) -> None:
        if mcu is None or index is None:
            return
        if (mcu, index) in mcu_inputs:
            raise fail(t.key("input"), f"input {index} of mcu {mcu!r} is already used by {mcu_inputs[(mcu, index)]}")
        mcu_inputs[(mcu, index)] = t.path

    zones = []
    for t in top.items("zone"):
        name = t.get("name", str, check=_name)
        pin, mcu, index = place(t, index_key="input")
        z = ZoneConfig(
            name=name,
            pin=pin,
            mcu=mcu,
            input=index,
            contact=t.get("contact", str, "nc", check=one_of(CONTACTS)),
            debounce_ms=t.get("debounce_ms", int, 50, check=lambda v: None if 0 <= v <= 10_000 else f"{v} is out of range (0 to 10000)"),
            siren=output_ref(t, "siren"),
        )
        t.done()
        claim_name(t.path, z.name)
        if pin is not None:
            claim_pin(t.path, pin)
        claim_input(t, mcu, index)
        zones.append(z)

    buttons = []
    for t in top.items("button"):
        name = t.get("name", str, check=_name)
        pin, mcu, index = place(t, index_key="input")
        b = ButtonConfig(
            name=name,
            pin=pin,
            mcu=mcu,
            input=index,
            hold_ms=t.get("hold_ms", int, 1500, check=lambda v: None if 0 <= v <= 60_000 else f"{v} is out of range (0 to 60000)"),
            silent=t.get("silent", bool, False),
            siren=output_ref(t, "siren"),
            indicator=output_ref(t, "indicator"),
        )
        t.done()
        if b.silent and b.siren is not None:
            raise fail(t.key("siren"), "a silent button never drives a siren")
        claim_name(t.path, b.name)
        if pin is not None:
            claim_pin(t.path, pin)
        claim_input(t, mcu, index)
        buttons.append(b)

    readers = []
    for t in top.items("reader"):
        name = t.get("name", str, check=_name)
        protocol = t.get("protocol", str, check=one_of(READER_PROTOCOLS))
        port = t.get("port", str, None)
        mcu = t.get("mcu", str, None)
        index = t.get("input", int, None, check=non_negative)
        baudrate = t.get("baudrate", int, None, check=positive)
        feedback = t.get("feedback", str, None)
        t.done()
        if feedback is not None:
            target = next((o for o in outputs if o.name == feedback), None)
            if target is None:
                raise fail(t.key("feedback"), f"no [[output]] is named {feedback!r}")
            if target.pin is None:
                raise fail(t.key("feedback"), f"output {feedback!r} is on an mcu; a feedback output needs a GPIO pin")
            if feedback == gpio.status_led:
                raise fail(t.key("feedback"), f"output {feedback!r} is the status LED")
        if protocol == "wiegand":
            if mcu is None:
                raise fail(t.key("mcu"), "missing key (a wiegand reader is read through an mcu)")
            if mcu not in mcu_names:
                raise fail(t.key("mcu"), f"no [[mcu]] is named {mcu!r}")
            if index is None:
                raise fail(t.key("input"), "missing key (needed with mcu)")
            if port is not None:
                raise fail(t.key("port"), "a wiegand reader has no port of its own")
        else:
            if port is None or not port:
                raise fail(t.key("port"), "missing key")
            if mcu is not None:
                raise fail(t.key("mcu"), f"a {protocol} reader is on a serial port, not an mcu")
        r = ReaderConfig(name=name, protocol=protocol, port=port, mcu=mcu, input=index, baudrate=baudrate,
                         feedback=feedback)
        claim_name(t.path, r.name)
        claim_input(t, mcu, index)
        readers.append(r)

    if gpio.status_led is not None and gpio.status_led not in output_names:
        raise fail("gpio.status_led", f"no [[output]] is named {gpio.status_led!r}")

    outbox_t = Table(top.get("outbox", dict, {}), "outbox", fail)
    outbox = OutboxConfig(
        max_events=outbox_t.get("max_events", int, 100_000, check=lambda v: None if v >= 10 else f"{v} is below the minimum of 10"),
        warn_fraction=outbox_t.get("warn_fraction", float, 0.8, check=lambda v: None if 0 < v <= 1 else f"{v} is not in (0, 1]"),
    )
    outbox_t.done()

    tele_t = Table(top.get("telemetry", dict, {}), "telemetry", fail)
    telemetry = TelemetryConfig(interval_s=tele_t.get("interval_s", float, 30.0, check=positive))
    tele_t.done()
    top.done()

    return AgentConfig(
        agent_id=agent_id,
        data_dir=data_dir,
        mqtt=mqtt,
        gpio=gpio,
        zones=tuple(zones),
        buttons=tuple(buttons),
        outputs=tuple(outputs),
        mcus=tuple(mcus),
        readers=tuple(readers),
        outbox=outbox,
        telemetry=telemetry,
        source=source,
        config_hash=hashlib.sha256(data).hexdigest()[:16],
    )

