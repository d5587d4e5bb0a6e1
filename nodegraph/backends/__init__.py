"""Execution backends: in this process, in a worker process the server can end and restart (the server's default),
or on a Ray cluster of worker actors (``pip install nodegraph[ray]``).

Nothing here imports Ray until the Ray backend is created.
"""

from .base import Backend, LocalBackend, create_backend
from .process import ProcessBackend

__all__ = ["Backend", "LocalBackend", "ProcessBackend", "create_backend"]
