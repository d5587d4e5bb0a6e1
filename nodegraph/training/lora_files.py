"""LoRAs trained in the graph (the LORA_MODEL value) and their files: kohya-layout tensors plus a training record.

The safetensors header holds ``nodegraph_training`` (JSON: steps, dataset and base-model SHA-256, settings, final
loss), kohya's ``ss_*`` keys, and whatever provenance the caller adds (the workflow, the run's manifest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINING_KEY = "nodegraph_training"  # safetensors metadata: JSON with steps, dataset/base-model hashes, settings


@dataclass(frozen=True, eq=False)
class TrainedLora:
    """LORA_MODEL: a LoRA trained in the graph (kohya-layout tensors) and how it was made."""

    tensors: dict[str, Any]
    steps: int
    info: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 over the tensors (names, shapes, bytes): names the in-graph file."""
        import torch

        h = hashlib.sha256()
        for key in sorted(self.tensors):
            t = self.tensors[key].contiguous()
            h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def save_lora_file(lora: TrainedLora, path: Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``lora`` as .safetensors with its training record (and ``extra``) in the header; returns the path."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {TRAINING_KEY: json.dumps(dict(lora.info, steps=lora.steps), sort_keys=True),
            "ss_network_module": "networks.lora", "ss_training_steps": str(lora.steps)}
    alphas = [float(v) for k, v in lora.tensors.items() if k.endswith(".alpha")]
    downs = [v for k, v in lora.tensors.items() if k.endswith(".lora_down.weight")]
    if alphas and downs:
        meta.update(ss_network_alpha=f"{alphas[0]:g}", ss_network_dim=str(downs[0].shape[0]))
    meta.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in lora.tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_training_record(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, training record) of a LoRA file; the record is empty for LoRAs not trained here."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    return tensors, json.loads(meta.get(TRAINING_KEY, "{}"))
