"""Engine configuration: the home folder (inputs, outputs, temp, models, database) and runtime switches."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .limits import Limits
from .paths import UnsafePathError, safe_join  # noqa: F401 - re-exported: one helper decides every user path

MODEL_FOLDERS = ("checkpoints", "vae", "loras", "upscale_models", "embeddings")


def default_home() -> Path:
    """``$NODEGRAPH_HOME``, else the per-user data folder (XDG on Linux)."""
    env = os.environ.get("NODEGRAPH_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "nodegraph"


@dataclass
class EngineConfig:
    """Where files live and how the engine runs; one object passed to everything that needs it."""

    home: Path = field(default_factory=default_home)
    models_dir: Path | None = None
    output_dir: Path | None = None
    plugin_dirs: list[Path] = field(default_factory=list)
    allow_unsafe_pickle: bool = False
    force_cpu: bool = False
    deterministic: bool = False
    #: Output cache bounds: bytes (models are held by the ModelManager, the cache keeps light handles); an entry
    #: cap only when set (tests).
    cache_max_entries: int | None = None
    cache_max_bytes: int = 2 * 1024**3
    #: Bytes loaded models may hold in RAM / on the accelerator; None: 50% of RAM / 90% of the GPU's memory.
    model_ram_budget: int | None = None
    model_vram_budget: int | None = None
    #: Caps on prompts (node count, strings, pixels, text windows) and the validation pool; see nodegraph.limits.
    limits: Limits = field(default_factory=Limits.from_env)

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        if self.models_dir is None:
            env = os.environ.get("NODEGRAPH_MODELS")
            self.models_dir = Path(env).expanduser() if env else self.home / "models"
        extra = os.environ.get("NODEGRAPH_PLUGIN_PATH", "")
        self.plugin_dirs = [Path(p) for p in self.plugin_dirs] + [Path(p) for p in extra.split(os.pathsep) if p]

    @property
    def input_dir(self) -> Path:
        """Uploaded and loadable input images."""
        return self.home / "input"

    @property
    def outputs_dir(self) -> Path:
        """Saved outputs (``--output-dir`` overrides)."""
        return Path(self.output_dir) if self.output_dir else self.home / "output"

    @property
    def temp_dir(self) -> Path:
        """Previews and other throw-away files."""
        return self.home / "temp"

    @property
    def user_dir(self) -> Path:
        """Settings, saved workflows and the queue database."""
        return self.home / "user"

    def model_dir(self, folder: str) -> Path:
        """The folder of one model kind (checkpoints, vae, loras, upscale_models, …)."""
        assert self.models_dir is not None
        return self.models_dir / folder

    def folder_for(self, kind: str) -> Path:
        """The root of a file kind as the HTTP API names it: input, output or temp."""
        roots = {"input": self.input_dir, "output": self.outputs_dir, "temp": self.temp_dir}
        if kind not in roots:
            raise UnsafePathError(f"unknown folder type {kind!r}; use input, output or temp")
        return roots[kind]

    def ensure_dirs(self) -> None:
        """Create the home folder tree."""
        for path in (self.input_dir, self.outputs_dir, self.temp_dir, self.user_dir,
                     *(self.model_dir(f) for f in MODEL_FOLDERS)):
            path.mkdir(parents=True, exist_ok=True)

    def list_models(self, folder: str, extensions: tuple[str, ...] = (".safetensors",)) -> list[str]:
        """Files (relative paths, sorted) under a model folder with one of ``extensions``; diffusers folders too."""
        root = self.model_dir(folder)
        if not root.is_dir():
            return []
        found: list[str] = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and path.suffix.lower() in extensions:
                if not any((p / "model_index.json").exists() for p in path.parents if root in p.parents):
                    found.append(rel)
            elif path.is_dir() and (path / "model_index.json").exists():
                found.append(rel)
        return found
