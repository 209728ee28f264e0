"""Central configuration: TOML into frozen dataclasses, checked at start-up.

Every mistake raises :class:`ConfigError` with one line naming the file and the
key path at fault (``central.toml: store.url: ...``); the command line turns it
into exit status 2. The reading rules are agent/config.py's (unknown keys are
rejected, types are exact, a bool is never a number); the table reader and
:class:`ConfigError` are shared with it through gridpatrol/base/, since
central and agent never import each other.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gridpatrol.base.errors import ConfigError
from gridpatrol.base.tomlconfig import Table, non_negative, not_empty, one_of, opt_path, parse_toml, positive, read_bytes
from gridpatrol.base.tomlconfig import port as port_number

DEFAULT_CLIENT_ID = "gridpatrol-central"
# A member of a group ([ingest] group) ends its session when it disconnects: Mosquitto keeps
# routing a share of $share messages to an offline member whose session lives, and those would
# wait there; the agents' outboxes and the other members carry the data instead (docs/scaling.md).
GROUP_SESSION_EXPIRY_S = 0
_GROUP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
# A week: long enough that a central down over a holiday weekend finds its
# queued messages; the agents' outboxes carry the guarantee beyond that.
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600
SESSION_EXPIRY_MAX_S = 0xFFFFFFFF  # MQTT v5: the largest expiry interval
_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" would also match before a final newline
_SQLITE_PREFIX = "sqlite://"
METRICS_ACCESS = ("login", "open")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    client_id: str = DEFAULT_CLIENT_ID
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the event store lives, and how long it keeps events and closed alarms (0: for ever)."""

    url: str
    path: Path | None  # the SQLite file; None for a PostgreSQL store
    retain_days: int = 0


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    """Seconds an alarm may stay unacknowledged at a tier before it goes up."""

    grid_s: float = 120.0
    community_s: float = 300.0
    street_s: float = 600.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str | None = None  # None: the web server makes one and keeps it in data_dir
    session_max_age_s: int = 12 * 3600  # one control-room shift
    cookie_secure: bool = False  # True once the dashboard is served over HTTPS
    public_url: str | None = None  # how people reach the dashboard: links in notifications (docs/notify.md)
    # Addresses (or networks) of reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; nobody else's are (docs/web.md).
    trusted_proxies: tuple[str, ...] = ()
    max_connections: int = 256  # open browser connections; past it the idlest goes, else 503 (docs/web.md)
    metrics: str = "login"  # who may read /metrics: "login" (staff sessions) or "open" (anyone who reaches web.listen)


@dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    enabled: bool = False
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True)
class AlarmsConfig:
    offline_grace_s: float = 60.0  # an agent offline this long raises an alarm


NOTIFY_LANGS = ("zh-CN", "en")
ALARM_KINDS = ("panic", "alarm", "tamper", "agent-offline", "agent-flapping", "suspicious")


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """One ``[[notify]]`` table: where alarms go beyond the dashboard (docs/notify.md)."""

    url: str = field(repr=False)  # an Apprise URL; it carries the robot's token, so it is never logged or shown
    unit: str | None = None  # None: the plan's root (a district)
    kinds: frozenset[str] = frozenset(ALARM_KINDS)
    lang: str = "zh-CN"
    name: str = ""  # how the trail names it; default: the unit and the URL's scheme
    rate_per_min: int = 5  # messages a minute; beyond it, one summary
    give_up_s: float = 3600.0  # a message not delivered by then is marked failed

    @property
    def label(self) -> str:
        return self.name or f"{self.url.partition(':')[0]}@{self.unit or 'root'}"


@dataclass(frozen=True, slots=True)
class CamerasConfig:
    """Retention of camera snapshots kept with alarms (docs/cameras.md)."""

    keep_days: float = 30.0
    max_mb: float = 1024.0


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """``group``: the name of a group of centrals that share one PostgreSQL store and the agents' messages."""

    group: str | None = None


@dataclass(frozen=True, slots=True)
class CentralConfig:
    timezone: str
    data_dir: Path
    store: StoreConfig
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    web: WebConfig = field(default_factory=WebConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    notify: tuple[NotifyTarget, ...] = ()
    cameras: CamerasConfig = field(default_factory=CamerasConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    source: str = "<config>"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


# -- reading ------------------------------------------------------------------


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not a known IANA time zone (Asia/Shanghai, UTC, ...)"
    return None


def _client_id(value: str) -> str | None:
    return None if _CLIENT_ID_RE.match(value) else f"{value!r} is not a valid client id ([A-Za-z0-9_-], 1 to 64 characters)"


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; ValueError names the form."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1 to 65535)")
    return host, port


def _networks(value: list[object]) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item if isinstance(item, str) else "?", strict=False)
        except ValueError:
            return f"{item!r} is not an IP address or network (10.0.0.5, 10.0.0.0/24, ::1)"
    return None


def _listen(value: str) -> str | None:
    try:
        split_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def store_path_from_url(url: str) -> Path | None:
    """``sqlite:///abs/path.db`` -> ``/abs/path.db``; a ``postgresql://USER@HOST/DB`` url -> None (no file).

    ValueError says what is wrong.
    """
    scheme = url.partition(":")[0].lower()
    if scheme in ("postgresql", "postgres"):
        _check_postgresql_url(url)
        return None
    if not url.startswith(_SQLITE_PREFIX):
        raise ValueError(f"{url!r} is not a sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB url")
    rest = url[len(_SQLITE_PREFIX):]
    if not rest.startswith("/") or rest.strip("/") == "":
        raise ValueError(f"{url!r} does not name an absolute path (sqlite:///ABSOLUTE/PATH)")
    # sqlite:////abs (SQLAlchemy's spelling of an absolute path) means the same file.
    return Path("/" + rest.lstrip("/"))


def _check_postgresql_url(url: str) -> None:
    """A libpq URL that names a database; the rest (host, port, ?sslmode=...) is libpq's to read."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{url!r}: write postgresql://USER@HOST/DB")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc} (postgresql://USER@HOST/DB)") from None
    if not parts.path.strip("/"):
        raise ValueError(f"{url!r} names no database (postgresql://USER@HOST/DB)")


def load_config(path: str | Path) -> CentralConfig:
    """Read and check a central configuration file."""
    return parse_config(read_bytes(path, ConfigError), source=str(path))


def parse_config(data: bytes | str, *, source: str = "<config>") -> CentralConfig:
    """Check a central configuration given as TOML text."""
    raw, fail = parse_toml(data, source=source, error=ConfigError)
    top = Table(raw, "", fail)
    timezone = top.get("timezone", str, check=_timezone)
    data_dir = Path(top.get("data_dir", str, check=not_empty))

    t = top.table("mqtt")
    mqtt = MqttConfig(
        host=t.get("host", str, "127.0.0.1", check=not_empty),
        port=t.get("port", int, 1883, check=port_number),
        keepalive_s=t.get("keepalive_s", int, 30,
                          check=lambda v: None if 2 <= v <= 3600 else f"{v} is out of range (2 to 3600)"),
        client_id=t.get("client_id", str, DEFAULT_CLIENT_ID, check=_client_id),
        session_expiry_s=t.get("session_expiry_s", int, -1,
                               check=lambda v: None if 0 <= v <= SESSION_EXPIRY_MAX_S
                               else f"{v} is out of range (0 to {SESSION_EXPIRY_MAX_S})"),
        tls_ca=opt_path(t.get("tls_ca", str, None, check=not_empty)),
        tls_cert=opt_path(t.get("tls_cert", str, None, check=not_empty)),
        tls_key=opt_path(t.get("tls_key", str, None, check=not_empty)),
        username=t.get("username", str, None),
        password=t.get("password", str, None),
    )
    t.done()
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        raise fail("mqtt.tls_cert", "tls_cert and tls_key go together")
    if mqtt.password is not None and mqtt.username is None:
        raise fail("mqtt.password", "needs mqtt.username")

    t = top.table("store")
    url = t.get("url", str, None)
    retain_days = t.get("retain_days", int, 0)
    t.done()
    if not 0 <= retain_days <= 36_500:
        raise fail("store.retain_days", f"{retain_days}: expected 0 (keep everything) to 36500 days")
    store_path: Path | None
    if url is None:
        store_path = data_dir / "central.db"
        url = f"{_SQLITE_PREFIX}{store_path}"
    else:
        try:
            store_path = store_path_from_url(url)
        except ValueError as exc:
            raise fail("store.url", str(exc)) from None
    store = StoreConfig(url=url, path=store_path, retain_days=retain_days)

    t = top.table("escalation")
    escalation = EscalationConfig(
        grid_s=t.get("grid_s", float, 120.0, check=positive),
        community_s=t.get("community_s", float, 300.0, check=positive),
        street_s=t.get("street_s", float, 600.0, check=positive),
    )
    t.done()

    t = top.table("web")
    listen = t.get("listen", str, "127.0.0.1:8080", check=_listen)
    host, port = split_listen(listen)
    web = WebConfig(
        listen=listen,
        host=host,
        port=port,
        secret_key=t.get("secret_key", str, None,
                         check=lambda v: None if len(v) >= 16 else "must be at least 16 characters"),
        session_max_age_s=t.get("session_max_age_s", int, 12 * 3600, check=positive),
        cookie_secure=t.get("cookie_secure", bool, False),
        public_url=t.get("public_url", str, None, check=_public_url),
        trusted_proxies=tuple(t.get("trusted_proxies", list, [], check=_networks)),
        max_connections=t.get("max_connections", int, 256,
                              check=lambda v: None if 16 <= v <= 4096 else "must be 16 to 4096"),
        metrics=t.get("metrics", str, "login", check=one_of(METRICS_ACCESS)),
    )
    t.done()

    t = top.table("homeassistant")
    homeassistant = HomeAssistantConfig(
        enabled=t.get("enabled", bool, False),
        discovery_prefix=t.get("discovery_prefix", str, "homeassistant",
                               check=lambda v: None if v and "#" not in v and "+" not in v
                               else f"{v!r} is not a topic prefix"),
    )
    t.done()

    t = top.table("alarms")
    alarms = AlarmsConfig(offline_grace_s=t.get("offline_grace_s", float, 60.0, check=non_negative))
    t.done()
    notify = tuple(_notify_target(t) for t in top.items("notify"))
    t = top.table("cameras")
    cameras = CamerasConfig(keep_days=t.get("keep_days", float, 30.0, check=positive),
                            max_mb=t.get("max_mb", float, 1024.0, check=positive))
    t.done()

    t = top.table("ingest")
    ingest = IngestConfig(group=t.get("group", str, None, check=lambda v: None if _GROUP_RE.match(v)
                                      else f"{v!r} is not a valid group name ([A-Za-z0-9_-], 1 to 64 characters)"))
    t.done()
    top.done()
    if ingest.group is not None and store.path is not None:
        raise fail("ingest.group", "a group shares one store: set store.url to postgresql://USER@HOST/DB")
    if ingest.group is not None and mqtt.client_id == DEFAULT_CLIENT_ID:
        # Each member needs its own id (one id is one session): the group's and the host's names by default.
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
        mqtt = dataclasses.replace(mqtt, client_id=f"{DEFAULT_CLIENT_ID}-{ingest.group}-{host}"[:64])
    if mqtt.session_expiry_s == -1:  # not given
        expiry = GROUP_SESSION_EXPIRY_S if ingest.group is not None else DEFAULT_SESSION_EXPIRY_S
        mqtt = dataclasses.replace(mqtt, session_expiry_s=expiry)
    elif ingest.group is None and mqtt.session_expiry_s < 60:
        raise fail("mqtt.session_expiry_s", f"{mqtt.session_expiry_s} is out of range (60 to {SESSION_EXPIRY_MAX_S};"
                   " 0 only in a group)")

    return CentralConfig(
        timezone=timezone,
        data_dir=data_dir,
        store=store,
        mqtt=mqtt,
        escalation=escalation,
        web=web,
        homeassistant=homeassistant,
        alarms=alarms,
        notify=notify,
        cameras=cameras,
        ingest=ingest,
        source=source,
    )


def _public_url(value: str) -> str | None:
    if not re.match(r"^https?://[^/\s]+", value):
        return f"{value!r} is not an http:// or https:// address"
    return None


def _notify_url(value: str) -> str | None:
    # The URL itself is never echoed: it carries the robot's access token.
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or not rest or not value.isprintable():
        return "is not an Apprise URL (SCHEME://...; see docs/notify.md)"
    return None


def _kinds(value: list[object]) -> str | None:
    if not value:
        return "must name at least one alarm kind"
    for kind in value:
        if kind not in ALARM_KINDS:
            return f"{kind!r} is not an alarm kind ({', '.join(ALARM_KINDS)})"
    return None


def _notify_target(t: Table) -> NotifyTarget:
    target = NotifyTarget(
        url=t.get("url", str, check=_notify_url),
        unit=t.get("unit", str, None, check=not_empty),
        kinds=frozenset(t.get("kinds", list, list(ALARM_KINDS), check=_kinds)),
        lang=t.get("lang", str, "zh-CN", check=one_of(NOTIFY_LANGS)),
        name=t.get("name", str, ""),
        rate_per_min=t.get("rate_per_min", int, 5, check=lambda v: None if 1 <= v <= 600 else f"{v} is out of range (1 to 600)"),
        give_up_s=t.get("give_up_s", float, 3600.0, check=positive),
    )
    t.done()
    return target

