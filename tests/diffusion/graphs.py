"""The diffusion tests' graph helpers, from the public testing kit (``nodegraph.testing_graphs``)."""

from __future__ import annotations

import torch

from nodegraph.testing_graphs import Capture, Captured  # noqa: F401
from nodegraph.testing_graphs import capture_engine as make_engine  # noqa: F401
from nodegraph.testing_graphs import run_captured as run  # noqa: F401
from nodegraph.testing_graphs import txt2img_graph as txt2img  # noqa: F401

# On the shared 2-core test machine, two OpenMP threads fighting other processes make a tiny UNet call ~50×
# slower (2 s instead of 30 ms); one thread keeps the diffusion tests fast. Both sides of every parity check run
# in this process, so they share the setting.
torch.set_num_threads(1)
