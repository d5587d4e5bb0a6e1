"""The HTTP/WebSocket server speaking ComfyUI's API: ``create_app(engine, settings)`` builds it, ``serve`` runs it.

Layout: ``app`` (factory, entry point), ``settings``, ``security`` (middlewares), ``store`` (durable queue and
history on SQLite), ``worker`` (the thread driving the engine), ``broadcast`` and ``messages`` (WebSocket),
``routes/`` (one module per concern, each a RouteTableDef mounted at / and /api).
"""

from .app import create_app, serve
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
