"""Shared test setup: offline, one torch thread, and nodegraph's pytest plugin (``nodegraph.testing``)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread in the test process and every subprocess it starts: the tiny test models gain nothing from more,
# results are then identical across processes, and parallel tests/servers never oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# The fixtures plugin authors use (engine, make_engine, make_registry, nodegraph_server, tiny_checkpoint, …); also
# loaded through the ``pytest11`` entry point when nodegraph is installed (same name, so it is registered once).
pytest_plugins = ["nodegraph.testing"]
