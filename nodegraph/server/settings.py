"""Server settings: where to listen, the auth token, and the caps on bodies, uploads and the queue."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field

TOKEN_ENV = "NODEGRAPH_TOKEN"
#: The default of ``ServerSettings.preview_method`` (``nodegraph serve --preview-method`` sets it; default none).
PREVIEW_ENV = "NODEGRAPH_PREVIEW_METHOD"
#: Live sampling previews: ``none`` (ComfyUI's default, and ``nodegraph serve``'s) sends them only to clients that
#: ask for them (the editor, whose ``feature_flags`` announce ``supports_preview_metadata``); ``auto``/``latent2rgb``
#: send them to every client (the default for ``create_app`` callers, as before the flag existed); ``taesd`` too,
#: decoded by the TAESD of the model's latents when its decoder is in models/vae_approx (diffusion.preview).
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
MB = 1024 * 1024
#: Shortest auth token accepted from the command line or the environment.
MIN_TOKEN_LENGTH = 16
#: Command-line flags whose value is a secret (redacted wherever the server reports its command line).
SECRET_FLAGS = ("--token",)
REDACTED = "***"


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
    #: Bytes of unsent messages per WebSocket: over it, progress and previews are dropped (superseded ones are always
    #: coalesced); a client whose must-see messages (outcomes, outputs) exceed it is closed.
    ws_buffer_bytes: int = 32 * MB
    #: Seconds a WebSocket client may read nothing while messages wait before it is closed.
    ws_stall_timeout: float = 60.0
    #: The command line the server reports (``/system_stats``); secrets in it are redacted on construction.
    argv: list[str] = field(default_factory=list)
    #: Run prompts in a worker process that is ended and restarted when a node ignores an interrupt (what
    #: ``nodegraph serve`` does). Off by default for ``create_app`` callers: starting the process costs seconds.
    worker_process: bool = False
    #: Seconds a node may ignore an interrupt before its worker process is ended (with ``worker_process``).
    interrupt_grace_s: float = 10.0
    #: One of PREVIEW_METHODS; default ``$NODEGRAPH_PREVIEW_METHOD``, else ``auto`` (``nodegraph serve``: ``none``).
    preview_method: str = field(default_factory=lambda: os.environ.get(PREVIEW_ENV) or "auto")

    def __post_init__(self) -> None:
        if not is_loopback(self.listen) and not self.token:
            raise ValueError(f"listening on {self.listen} (not loopback) requires an auth token: pass --token or "
                             f"set ${TOKEN_ENV} (serve() generates one when neither is given)")
        if not self.ws_stall_timeout > 0:
            raise ValueError(f"ws_stall_timeout={self.ws_stall_timeout!r}: give a positive number of seconds, e.g. 60")
        if not self.ws_buffer_bytes > 0:
            raise ValueError(f"ws_buffer_bytes={self.ws_buffer_bytes!r}: give a positive byte count, e.g. 32 MiB")
        if not self.interrupt_grace_s >= 0:
            raise ValueError(f"interrupt_grace_s={self.interrupt_grace_s!r}: give zero or more seconds, e.g. 10")
        if self.preview_method not in PREVIEW_METHODS:
            raise ValueError(f"preview_method={self.preview_method!r}: use one of {', '.join(PREVIEW_METHODS)} "
                             f"(from --preview-method or ${PREVIEW_ENV})")
        self.argv = redact_argv(self.argv, [self.token] if self.token else [])


def resolve_token(listen: str, token: str | None) -> tuple[str | None, bool]:
    """The token to enforce: the flag, else ``$NODEGRAPH_TOKEN``, else a new one off loopback; (token, generated)."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(listen):
        return secrets.token_urlsafe(32), True
    return token, False


def check_token(token: str | None) -> None:
    """Refuse a token too short to resist guessing; raises ValueError that says how to choose a good one."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the auth token (--token or ${TOKEN_ENV}) has {len(token)} character(s); use at least "
                         f"{MIN_TOKEN_LENGTH}, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))', or "
                         "give none to have one generated off loopback")


def _secret_flag(arg: str) -> str | None:
    """The secret flag ``arg`` names, even abbreviated (``--tok``) or with ``=value``; else None."""
    name = arg.split("=", 1)[0]
    if len(name) < 3 or not name.startswith("--"):
        return None
    return next((flag for flag in SECRET_FLAGS if flag.startswith(name)), None)


def redact_argv(argv: list[str], secrets_: list[str] | None = None) -> list[str]:
    """A copy of a command line with every secret hidden: ``--token X``, ``--token=X`` (and abbreviations of the
    flag), and any argument holding a known secret value (e.g. the token from ``$NODEGRAPH_TOKEN``)."""
    known = [s for s in (secrets_ or []) + [os.environ.get(TOKEN_ENV) or ""] if s]
    out: list[str] = []
    hide = False
    for arg in argv:
        arg = str(arg)
        if hide:
            out.append(REDACTED)
            hide = False
            continue
        flag = _secret_flag(arg)
        if flag is not None:
            if "=" in arg:
                out.append(f"{arg.split('=', 1)[0]}={REDACTED}")
            else:
                out.append(arg)
                hide = True
        elif any(secret in arg for secret in known):
            out.append(REDACTED)
        else:
            out.append(arg)
    return out
