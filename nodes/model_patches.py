"""Model patches: guidance rescaling, FreeU, PerpNeg, self-attention guidance, differential diffusion, discrete model sampling."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The model patch nodes."""
    return []
