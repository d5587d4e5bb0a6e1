"""Detect the architecture of a single-file checkpoint from its tensor names and shapes (header only)."""

from __future__ import annotations

#: Header metadata key under which nodegraph stores a model's diffusers configs and tokenizer files (JSON).
METADATA_KEY = "nodegraph.diffusers"
