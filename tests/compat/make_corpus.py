"""Rebuild tests/compat/corpus/ from a local clone of comfyanonymous/ComfyUI_examples (not run by the tests).

Usage: python tests/compat/make_corpus.py PATH_TO_GIT_DIR  (a bare or normal clone; reads HEAD)
Keeps the SD1/SD2/SDXL-family PNGs (and one group-node example) that carry both ``workflow`` and ``prompt``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

FOLDERS = ("2_pass_txt2img", "area_composition", "controlnet", "edit_models", "gligen", "hypernetworks", "img2img",
           "inpaint", "lcm", "lora", "model_merging", "noisy_latent_composition", "sdturbo", "sdxl",
           "textual_inversion_embeddings", "unclip", "upscale_models")
EXTRA = ("hidream/hidream_e1_example.png",)  # a group node (workflow>IP2PSampler) in the newer naming
OUT = Path(__file__).with_name("corpus")


def main(git_dir: str) -> None:
    """Extract the chunks of every selected PNG into one JSON file each."""
    git = ["git", "--git-dir", git_dir]
    names = subprocess.check_output([*git, "ls-tree", "-r", "--name-only", "HEAD"], text=True).split()
    for name in names:
        if not name.endswith(".png") or (name.split("/")[0] not in FOLDERS and name not in EXTRA):
            continue
        blob = subprocess.run([*git, "show", f"HEAD:{name}"], capture_output=True, check=False)
        if blob.returncode:
            print("absent from the clone:", name)
            continue
        with Image.open(io.BytesIO(blob.stdout)) as img:
            text = dict(getattr(img, "text", {}))
        if "workflow" in text and "prompt" in text:
            data = {"source": name, "workflow": json.loads(text["workflow"]), "prompt": json.loads(text["prompt"])}
            path = OUT / (name[:-4].replace("/", "__") + ".json")
            path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
