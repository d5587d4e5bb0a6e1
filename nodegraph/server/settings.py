"""Server settings: where to listen, the auth token, and the caps on bodies, uploads and the queue."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field

TOKEN_ENV = "NODEGRAPH_TOKEN"
MB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerSettings:
    """Everything the HTTP layer needs to know besides the engine."""

    listen: str = "127.0.0.1"
    port: int = 8188
    #: Required on every request when set; ``resolve_token`` makes one when binding off loopback.
    token: str | None = None
    max_upload_bytes: int = 50 * MB
    max_json_bytes: int = 20 * MB
    max_pending: int = 1000
    max_history: int = 10000
    #: Extra ``scheme://host[:port]`` origins allowed to call the API from a browser.
    allowed_origins: tuple[str, ...] = ()
    #: Messages buffered per WebSocket before progress and previews are dropped for that client.
    ws_buffer: int = 256
    argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not is_loopback(self.listen) and not self.token:
            raise ValueError(f"listening on {self.listen} (not loopback) requires an auth token: pass --token or "
                             f"set ${TOKEN_ENV} (serve() generates one when neither is given)")


def resolve_token(listen: str, token: str | None) -> tuple[str | None, bool]:
    """The token to enforce: the flag, else ``$NODEGRAPH_TOKEN``, else a new one off loopback; (token, generated)."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(listen):
        return secrets.token_urlsafe(32), True
    return token, False
