"""nodegraph-sdk-demo: a plugin that uses only ``nodegraph.api``.

- ``CheckpointWithVAE``: a model loader (a checkpoint, optionally with a separate VAE file).
- ``RegionHint``: a ControlNet-style node: CONDITIONING + IMAGE in, CONDITIONING with a ``region_hint`` out.
- ``hinted_euler``: a sampler (KSampler's sampler_name) that reads the hint: guidance is stronger where the hint
  image is bright and weaker where it is dark. Without a hint it is plain Euler.
- ``cosine``: a schedule (KSampler's scheduler) for plugin samplers.
"""

from __future__ import annotations

from nodegraph.api import SamplerDef, ScheduleDef, hookimpl

from .nodes import CheckpointWithVAE, RegionHint
from .sampler import cosine_schedule, hinted_euler

__version__ = "0.1.0"

NODEGRAPH_SAMPLERS = [SamplerDef("hinted_euler", hinted_euler, "Euler; a RegionHint scales the guidance per area")]
NODEGRAPH_SCHEDULERS = [ScheduleDef("cosine", cosine_schedule, "noise levels on a cosine curve in log-sigma")]


@hookimpl
def nodegraph_nodes() -> list[type]:
    """The demo's nodes."""
    return [CheckpointWithVAE, RegionHint]
