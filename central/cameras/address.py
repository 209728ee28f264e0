"""Camera addresses: the credentials in a URL's userinfo, apart from the rest."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit


def split_credentials(url: str) -> tuple[str, str | None, str]:
    """``(url without userinfo, user or None, password)``."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None, ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(parts.username), \
        unquote(parts.password or "")


def public_address(url: str) -> str:
    """An address as operators may see it: without the credentials."""
    try:
        return split_credentials(url)[0]
    except ValueError:  # a port out of range, say: show nothing rather than a password
        return ""
