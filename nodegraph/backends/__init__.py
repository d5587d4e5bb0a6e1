"""Execution backends: in-process (default) or a Ray cluster of worker actors (``pip install nodegraph[ray]``).

Nothing here imports Ray until the Ray backend is created.
"""

from .base import Backend, LocalBackend, create_backend

__all__ = ["Backend", "LocalBackend", "create_backend"]
