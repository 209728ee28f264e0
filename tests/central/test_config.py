"""Central configuration: docs/reference.md's example reads, every mistake names its key."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_SESSION_EXPIRY_S,
    GROUP_SESSION_EXPIRY_S,
    AlarmsConfig,
    CentralConfig,
    ConfigError,
    EscalationConfig,
    HomeAssistantConfig,
    IngestConfig,
    MqttConfig,
    StoreConfig,
    WebConfig,
    load_config,
    parse_config,
)

DESIGN_EXAMPLE = """
timezone = "Asia/Shanghai"
data_dir = "/var/lib/gridpatrol"      # the store and the plan registry live here by default

[mqtt]
host = "127.0.0.1"
port = 1883

[store]
url = "sqlite:///var/lib/gridpatrol/central.db"   # or postgresql://USER@HOST/DB

[escalation]                          # seconds an alarm may stay unacknowledged at a tier before it goes up
grid_s = 120
community_s = 300
street_s = 600

[web]
listen = "127.0.0.1:8080"
"""

MINIMAL = 'timezone = "UTC"\ndata_dir = "/srv/gp"\n'


def test_designs_example_reads_in_full() -> None:
    config = parse_config(DESIGN_EXAMPLE, source="central.toml")
    assert config == CentralConfig(
        timezone="Asia/Shanghai",
        data_dir=Path("/var/lib/gridpatrol"),
        store=StoreConfig(url="sqlite:///var/lib/gridpatrol/central.db", path=Path("/var/lib/gridpatrol/central.db")),
        mqtt=MqttConfig(host="127.0.0.1", port=1883),
        escalation=EscalationConfig(grid_s=120.0, community_s=300.0, street_s=600.0),
        web=WebConfig(listen="127.0.0.1:8080", host="127.0.0.1", port=8080),
        homeassistant=HomeAssistantConfig(enabled=False),
        alarms=AlarmsConfig(offline_grace_s=60.0),
        source="central.toml",
    )
    assert str(config.tz) == "Asia/Shanghai"


def test_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.store == StoreConfig(url="sqlite:///srv/gp/central.db", path=Path("/srv/gp/central.db"))
    assert config.mqtt.client_id == DEFAULT_CLIENT_ID
    assert config.mqtt.session_expiry_s == DEFAULT_SESSION_EXPIRY_S
    assert config.escalation == EscalationConfig(120.0, 300.0, 600.0)
    assert (config.web.listen, config.web.secret_key, config.web.cookie_secure) == ("127.0.0.1:8080", None, False)
    assert config.homeassistant.enabled is False
    assert config.alarms.offline_grace_s == 60.0


def test_a_postgresql_store_has_no_file() -> None:
    config = parse_config(MINIMAL + '[store]\nurl = "postgresql://gridpatrol@db.example:5433/gp?sslmode=require"\n')
    assert config.store == StoreConfig(url="postgresql://gridpatrol@db.example:5433/gp?sslmode=require", path=None)


def test_a_group_member_gets_its_own_client_id_and_a_session_that_ends_with_it() -> None:
    pg = '[store]\nurl = "postgresql://gp@db/gp"\n'
    config = parse_config(MINIMAL + pg + '[ingest]\ngroup = "district-1"\n')
    assert config.ingest == IngestConfig(group="district-1")
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    assert config.mqtt.client_id == f"gridpatrol-central-district-1-{host}"[:64]
    assert config.mqtt.session_expiry_s == GROUP_SESSION_EXPIRY_S == 0
    config = parse_config(MINIMAL + '[mqtt]\nclient_id = "c-2"\nsession_expiry_s = 120\n' + pg
                          + '[ingest]\ngroup = "d1"\n')
    assert (config.mqtt.client_id, config.mqtt.session_expiry_s) == ("c-2", 120)
    assert parse_config(MINIMAL).ingest == IngestConfig(group=None)


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + '[ingest]\ngroup = "d1"\n',
     "c.toml: ingest.group: a group shares one store: set store.url to postgresql://USER@HOST/DB"),
    (MINIMAL + '[store]\nurl = "postgresql://gp@db/gp"\n[ingest]\ngroup = "$share"\n',
     "c.toml: ingest.group: '$share' is not a valid group name ([A-Za-z0-9_-], 1 to 64 characters)"),
    (MINIMAL + '[mqtt]\nsession_expiry_s = 0\n',
     "c.toml: mqtt.session_expiry_s: 0 is out of range (60 to 4294967295; 0 only in a group)"),
])
def test_group_mistakes(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.toml")
    assert str(info.value) == message


def test_every_optional_key_reads() -> None:
    config = parse_config(MINIMAL + """
[mqtt]
host = "broker.example"
port = 8883
keepalive_s = 20
client_id = "central-2"
session_expiry_s = 86400
tls_ca = "/pki/ca.crt"
tls_cert = "/pki/central.crt"
tls_key = "/pki/central.key"
username = "central"
password = "pw"
[store]
url = "sqlite:////abs/other.db"
[web]
listen = "[::1]:9000"
secret_key = "0123456789abcdef0123"
session_max_age_s = 3600
cookie_secure = true
[homeassistant]
enabled = true
discovery_prefix = "ha"
[alarms]
offline_grace_s = 0
""")
    assert config.mqtt == MqttConfig(
        host="broker.example", port=8883, keepalive_s=20, client_id="central-2", session_expiry_s=86400,
        tls_ca=Path("/pki/ca.crt"), tls_cert=Path("/pki/central.crt"), tls_key=Path("/pki/central.key"),
        username="central", password="pw",
    )
    assert config.store.path == Path("/abs/other.db")
    assert config.web == WebConfig(listen="[::1]:9000", host="::1", port=9000, secret_key="0123456789abcdef0123",
                                   session_max_age_s=3600, cookie_secure=True)
    assert config.homeassistant == HomeAssistantConfig(enabled=True, discovery_prefix="ha")
    assert config.alarms == AlarmsConfig(offline_grace_s=0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('data_dir = "/x"\n', "c.toml: timezone: missing key"),
        ('timezone = "UTC"\n', "c.toml: data_dir: missing key"),
        ('timezone = "Mars/Olympus"\ndata_dir = "/x"\n',
         "c.toml: timezone: 'Mars/Olympus' is not a known IANA time zone (Asia/Shanghai, UTC, ...)"),
        (MINIMAL + "colour = 1\n", "c.toml: colour: unknown key"),
        (MINIMAL + "[mqtt]\nport = 70000\n", "c.toml: mqtt.port: port 70000 is out of range (1 to 65535)"),
        (MINIMAL + '[mqtt]\nport = "1883"\n', "c.toml: mqtt.port: must be an integer, not str"),
        (MINIMAL + "[mqtt]\nport = true\n", "c.toml: mqtt.port: must be an integer, not a boolean"),
        (MINIMAL + "[mqtt]\nhots = 1\n", "c.toml: mqtt.hots: unknown key"),
        (MINIMAL + '[mqtt]\ntls_cert = "/c"\n', "c.toml: mqtt.tls_cert: tls_cert and tls_key go together"),
        (MINIMAL + '[mqtt]\npassword = "p"\n', "c.toml: mqtt.password: needs mqtt.username"),
        (MINIMAL + '[mqtt]\nclient_id = "a b"\n',
         "c.toml: mqtt.client_id: 'a b' is not a valid client id ([A-Za-z0-9_-], 1 to 64 characters)"),
        (MINIMAL + '[store]\nurl = "postgresql://db"\n',
         "c.toml: store.url: 'postgresql://db' names no database (postgresql://USER@HOST/DB)"),
        (MINIMAL + '[store]\nurl = "postgresql://db:port/gp"\n',
         "c.toml: store.url: 'postgresql://db:port/gp': Port could not be cast to integer value as 'port'"
         " (postgresql://USER@HOST/DB)"),
        (MINIMAL + '[store]\nurl = "mysql://db"\n',
         "c.toml: store.url: 'mysql://db' is not a sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB url"),
        (MINIMAL + '[store]\nurl = "sqlite://rel.db"\n',
         "c.toml: store.url: 'sqlite://rel.db' does not name an absolute path (sqlite:///ABSOLUTE/PATH)"),
        (MINIMAL + "[escalation]\ngrid_s = 0\n", "c.toml: escalation.grid_s: must be greater than 0, not 0.0"),
        (MINIMAL + '[web]\nlisten = "8080"\n', "c.toml: web.listen: '8080' is not HOST:PORT"),
        (MINIMAL + '[web]\nlisten = "h:0"\n', "c.toml: web.listen: port 0 is out of range (1 to 65535)"),
        (MINIMAL + '[web]\nsecret_key = "short"\n', "c.toml: web.secret_key: must be at least 16 characters"),
        (MINIMAL + "[homeassistant]\nenabled = 1\n", "c.toml: homeassistant.enabled: must be a boolean, not int"),
        (MINIMAL + "[alarms]\noffline_grace_s = -1\n", "c.toml: alarms.offline_grace_s: must not be negative, not -1.0"),
        (MINIMAL + "mqtt = 3\n", "c.toml: mqtt: must be a table, not int"),
        ("timezone = ", "c.toml: not valid TOML: "),
    ],
)
def test_mistakes_name_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.toml")
    assert str(info.value).startswith(message)
    if not message.endswith(": "):
        assert str(info.value) == message


def test_not_utf8() -> None:
    with pytest.raises(ConfigError, match=r"^c.toml: not UTF-8 text: invalid start byte at byte 0$"):
        parse_config(b"\xff", source="c.toml")


def test_load_config_names_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    good = tmp_path / "central.toml"
    good.write_text(MINIMAL)
    assert load_config(good).source == str(good)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_hostile_input_is_a_config_error_or_a_config(data: bytes | str) -> None:
    try:
        parse_config(data)
    except ConfigError:
        pass


def test_integers_beyond_64_bits_are_config_errors() -> None:
    """Found by bench/fuzz.py: a huge integer for a number of seconds raised OverflowError."""
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "[escalation]\ngrid_s = 1" + "0" * 400 + "\n", source="c.toml")
    assert str(info.value) == "c.toml: escalation.grid_s: is out of range (TOML integers are 64-bit)"


def test_a_client_id_with_a_final_newline_is_invalid() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + '[mqtt]\nclient_id = "central\\n"\n', source="c.toml")
    assert str(info.value) == "c.toml: mqtt.client_id: 'central\\n' is not a valid client id ([A-Za-z0-9_-], 1 to 64 characters)"
