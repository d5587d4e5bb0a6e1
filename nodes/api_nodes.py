"""Nodes for API clients: images sent straight to the submitting client over its WebSocket, no file written."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Link, Node, hookimpl, image_to_pils


class SaveImageWebsocket(Node):
    """Send images to the client that queued the prompt as binary WebSocket frames (PNG); nothing is saved.

    Each image is one frame: uint32 big-endian 1 (image), uint32 2 (PNG), then the PNG bytes, as ComfyUI sends
    them (its script example ``websockets_api_example_ws_images.py`` keeps ``frame[8:]``).
    """

    DISPLAY_NAME = "SaveImageWebsocket"
    CATEGORY = "api node/image"
    OUTPUT_NODE = True
    #: Runs on every prompt (as ComfyUI's, whose IS_CHANGED is the time): a cached run would send no images.
    DETERMINISTIC = False
    INPUTS = {"images": Link("IMAGE", tooltip="the images to send to the client")}
    OUTPUTS = ()

    def execute(self, ctx, images: Any):
        pils = image_to_pils(images)
        for step, pil in enumerate(pils):
            ctx.progress(step, len(pils))
            ctx.send_image(pil, "PNG")
        return ()


@hookimpl
def nodegraph_nodes():
    """Nodes for API clients."""
    return [SaveImageWebsocket]
