"""Socket addresses as people write them."""

from __future__ import annotations

from tunlab.errors import TunlabError

__all__ = ["parse_hostport"]


def parse_hostport(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 hosts in brackets) as a socket address; TunlabError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise TunlabError(f"{text!r} is not HOST:PORT", "write it like 127.0.0.1:5555")
    return host.strip("[]"), int(port)

