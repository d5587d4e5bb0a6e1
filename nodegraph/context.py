"""What a node sees while it runs: progress reporting, interruption, configuration and shared services."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from .config import EngineConfig, safe_join
from .events import EventBus, NodeImage, NodeProgress

if TYPE_CHECKING:
    from PIL import Image

    from .diffusion.custom import SamplerRegistry
    from .diffusion.devices import DeviceManager
    from .diffusion.lora import LoraWeights
    from .diffusion.types import DiffusionModel, TextEncoder
    from .models.handles import ModelHandle
    from .models.manager import CheckpointHandles


class Interrupted(Exception):
    """Raised inside a run when it was interrupted; the executor turns it into a RunInterrupted event."""


class InterruptFlag:
    """A cooperative interrupt switch shared by a run and whoever may stop it (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the run to stop at its next check."""
        self._event.set()

    def clear(self) -> None:
        """Reset before the next run."""
        self._event.clear()

    def is_set(self) -> bool:
        """Whether an interrupt was requested."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise ``Interrupted`` if an interrupt was requested."""
        if self._event.is_set():
            raise Interrupted("interrupted by request")


@dataclass
class Services:
    """Long-lived objects shared by nodes across runs (model manager, device policy, …), keyed by type."""

    _items: dict[type, Any] = field(default_factory=dict)

    def get(self, kind: type, factory: Callable[[], Any] | None = None) -> Any:
        """The service of ``kind``, created with ``factory`` (or ``kind()``) on first use."""
        if kind not in self._items:
            self._items[kind] = (factory or kind)()
        return self._items[kind]

    def find(self, kind: type) -> Any | None:
        """The service of ``kind`` if one was created, without creating it."""
        return self._items.get(kind)

    def put(self, kind: type, value: Any) -> None:
        """Install a service explicitly."""
        self._items[kind] = value

    def values(self) -> list[Any]:
        """All services created so far."""
        return list(self._items.values())


@dataclass
class ExecutionContext:
    """Passed to ``Node.execute``: where the node is, what run it belongs to, and helpers for long work."""

    node_id: str
    class_type: str
    run_id: str
    config: EngineConfig
    services: Services
    bus: EventBus
    interrupt: InterruptFlag
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    manifest_source: "Callable[[], dict[str, Any] | None] | None" = None

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The run's provenance manifest (built on first use; SaveImage writes it into the PNG)."""
        return self.manifest_source() if self.manifest_source else None

    def progress(self, value: int, total: int, preview: tuple[str, bytes] | None = None,
                 text: str | None = None) -> None:
        """Report progress (optionally a preview image as ("JPEG"|"PNG", bytes) and a short status ``text`` such as
        ``"loss 0.0123"``, shown by the CLI bar and sent over the WebSocket); also checks for interrupt."""
        self.bus.emit(NodeProgress(self.run_id, self.node_id, int(value), int(total), preview,
                                   None if text is None else str(text)[:200]))
        self.interrupt.check()

    def check_interrupt(self) -> None:
        """Raise ``Interrupted`` if the run was asked to stop; long nodes call this at each step."""
        self.interrupt.check()

    @property
    def extra_pnginfo(self) -> dict[str, Any]:
        """Extra PNG text chunks sent by the client (the editor sends ``workflow``)."""
        return dict(self.extra_data.get("extra_pnginfo") or {})

    @property
    def devices(self) -> "DeviceManager":
        """The engine's device policy: ``.device``, ``.dtype``, ``with ctx.devices.use(module): ...``."""
        from .models import model_manager

        return model_manager(self.services, self.config).devices

    @property
    def models(self) -> "Models":
        """Model files: resolve, load checkpoints/VAEs/LoRAs, encode text (see ``Models``)."""
        return Models(self)

    @property
    def files(self) -> "Files":
        """Input/output/temp files under the engine's home, never outside it (see ``Files``)."""
        return Files(self.config)

    @property
    def samplers(self) -> "SamplerRegistry":
        """The samplers and schedules this engine offers (built-in and from plugins)."""
        from .diffusion.custom import samplers_of

        return samplers_of(self.config)

    def preview(self, image: Any, value: int = 0, total: int = 0, text: str | None = None) -> None:
        """Show ``image`` (a Pillow image or an IMAGE tensor) in the client as this node's live preview."""
        import io

        from .imaging import image_to_pils

        pil = image if hasattr(image, "save") else image_to_pils(image[:1])[0]
        pil = pil.convert("RGB")
        pil.thumbnail((512, 512))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=85)
        self.progress(value, total, ("JPEG", buf.getvalue()), text)

    def send_image(self, image: Any, fmt: str = "PNG") -> None:
        """Send ``image`` (a Pillow image) whole to the client that submitted the run as a binary WebSocket frame."""
        import io

        fmt = fmt.upper()
        buf = io.BytesIO()
        if fmt == "PNG":
            image.save(buf, format="PNG", compress_level=1)
        else:
            image.convert("RGB").save(buf, format="JPEG", quality=95)
        self.bus.emit(NodeImage(self.run_id, self.node_id, fmt, buf.getvalue()))


class Models:
    """What a node may do with model files, through the engine's ModelManager (one per context).

    Loaders return light ``ModelHandle`` objects (what the output cache stores); the manager keeps the weights
    within its RAM budget and loads an evicted model again when a handle is used. A node gets the model behind a
    handle with ``get(value)``, or pinned for a block with ``with ctx.models.use(model, clip) as (model, clip):``;
    both pass plain models (from plugins) through unchanged.
    """

    def __init__(self, ctx: ExecutionContext) -> None:
        from .models import model_manager

        self._ctx = ctx
        self._config = ctx.config
        self._manager = model_manager(ctx.services, ctx.config)

    def get(self, value: Any) -> Any:
        """The model behind a handle (loaded again if it was evicted); any other value unchanged."""
        return self._manager.resolve(value)

    def use(self, *values: Any) -> "AbstractContextManager[tuple[Any, ...]]":
        """``with ctx.models.use(model, clip) as (model, clip):`` the models, kept loaded for the block."""
        return self._manager.use(*values)

    def resolve(self, folder: str, name: str) -> Path:
        """The path of model ``name`` in the models sub-folder ``folder`` (never outside it)."""
        from .diffusion.loading import resolve_model

        return resolve_model(self._config, folder, name)

    def check_loadable(self, path: Path) -> None:
        """Raise a clear error unless ``path`` may be loaded (safetensors, or pickles when allowed)."""
        from .diffusion.loading import check_loadable

        check_loadable(path, bool(self._config.allow_unsafe_pickle))

    def load_checkpoint(self, name: str, folder: str = "checkpoints") -> "CheckpointHandles":
        """Load checkpoint ``name`` (a .safetensors file or a diffusers folder): handles ``.model``, ``.clip``,
        ``.vae`` (in the accelerator's dtype when there is one: half the host memory for GPU runs)."""
        return self._manager.load_checkpoint(self.resolve(folder, name), self._config, name=name)

    def load_vae(self, name: str, folder: str = "vae") -> "ModelHandle":
        """Load a VAE file or folder (a handle)."""
        return self._manager.load_vae(self.resolve(folder, name), self._config, name=name)

    def load_file(self, folder: str, name: str, load: Callable[[], Any]) -> "ModelHandle":
        """A handle to what ``load()`` reads from model ``name`` in ``folder``, held by the engine's ModelManager.

        ``load`` runs now (so a broken file fails in the loader node) and again whenever the model was evicted.
        """
        return self._manager.load(folder, self.resolve(folder, name), load, name=name)

    def load_lora(self, name: str, folder: str = "loras") -> "LoraWeights":
        """The parsed LoRA file ``name`` (kept by the engine across runs)."""
        return self.lora_library().get(self.resolve(folder, name), bool(self._config.allow_unsafe_pickle))

    def apply_lora(self, name: str, model: "DiffusionModel | ModelHandle | None",
                   clip: "TextEncoder | ModelHandle | None", strength_model: float,
                   strength_clip: float) -> "tuple[Any, Any]":
        """Copies of ``model``/``clip`` (handles or models) recording LoRA ``name`` (weights shared; applied while
        sampling/encoding)."""
        from .diffusion import lora
        from .diffusion.types import LoraPatch
        from .models import derive

        path = self.resolve("loras", name)
        allow = bool(self._config.allow_unsafe_pickle)
        weights = self.load_lora(name)
        hits = 0
        with self.use(model, clip) as (loaded_model, loaded_clip):
            if loaded_model is not None and strength_model != 0:
                hits += len(lora.match(weights, lora.unet_targets(loaded_model.unet), "unet").updates)
            if loaded_clip is not None and strength_clip != 0:
                hits += len(lora.match(weights, lora.text_targets(tuple(loaded_clip.encoders)), "text").updates)
        wanted = (model is not None and strength_model != 0) or (clip is not None and strength_clip != 0)
        if wanted and hits == 0:
            arch = getattr(model, "arch", None) or getattr(clip, "arch", "?")
            raise ValueError(f"LoRA {name!r} matches no layer of this {arch} model ({len(weights.pairs)} updates, "
                             f"e.g. {next(iter(weights.pairs), '-')}); it was probably made for another model family")
        if model is not None and strength_model != 0:
            model = model.with_lora(LoraPatch(name, str(path), float(strength_model), allow))
        if clip is not None and strength_clip != 0:
            clip = derive(clip, loras=tuple(clip.loras) + (LoraPatch(name, str(path), float(strength_clip), allow),))
        return model, clip

    def lora_library(self) -> Any:
        """The engine's parsed-LoRA cache, in its ModelManager (what ``sample``/``encode_text`` apply patches from)."""
        from .models import lora_library

        return lora_library(self._ctx.services, self._config)

    def encode_text(self, clip: "TextEncoder | ModelHandle", text: str,
                    max_chunks: int | None = None) -> list[tuple[Any, dict[str, Any]]]:
        """CONDITIONING for ``text``: the encoder on the device, with the CLIP's LoRAs and layer choice applied.

        A text longer than ``max_chunks`` token windows (default: the engine's ``limits.max_text_chunks``) raises
        ValueError.
        """
        from .diffusion.embeddings import Embeddings
        from .diffusion.sampling import lora_applied
        from .diffusion.text import encode_text

        chunks = int(self._config.limits.max_text_chunks if max_chunks is None else max_chunks)
        devices = self._ctx.devices
        embeddings = Embeddings([self._config.model_dir("embeddings")])  # ``embedding:name`` words
        with self.use(clip) as (loaded,), devices.use(*loaded.encoders), \
                lora_applied(loaded, self.lora_library() if loaded.loras else None):
            return encode_text(loaded, text, devices.device, chunks, embeddings)


class Files:
    """Paths under the engine's input/output/temp folders, through ``safe_join`` (no ``..``, no absolute paths)."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config

    def folder(self, kind: str) -> Path:
        """The root of ``input``, ``output`` or ``temp``."""
        return self._config.folder_for(kind)

    def path(self, kind: str, name: str) -> Path:
        """``name`` inside folder ``kind``; raises UnsafePathError when it would leave it."""
        return safe_join(self.folder(kind), name)

    def input_path(self, name: str) -> Path:
        """An existing file in the input folder; FileNotFoundError says where to put it."""
        path = self.path("input", name)
        if not path.is_file():
            raise FileNotFoundError(f"input file {name!r} is not in {self._config.input_dir}; upload it or copy "
                                    "it there")
        return path

    def open_image(self, name: str) -> "Image.Image":
        """An input image, rotated upright by its EXIF orientation."""
        from PIL import Image, ImageOps

        img = Image.open(self.input_path(name))
        return ImageOps.exif_transpose(img) or img

    def create(self, prefix: str, suffix: str, kind: str = "output") -> "tuple[BinaryIO, dict[str, str]]":
        """A new numbered file ``{prefix}_{counter:05}_{suffix}`` in folder ``kind`` (never overwriting, never
        leaving it), open for binary writing; returns (file, UI entry ``{"filename", "subfolder", "type"}``)."""
        from .imaging import create_numbered

        handle, entry = create_numbered(self.folder(kind), prefix, suffix)
        entry["type"] = kind
        return handle, entry

    def save_images(self, images: Any, prefix: str, kind: str = "output",
                    text: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """Save an IMAGE batch as PNGs (``prefix`` may hold a subfolder); returns the UI entries ``{"images": …}``."""
        from .imaging import image_to_pils, save_pngs

        entries = save_pngs(image_to_pils(images), self.folder(kind), prefix, text)
        for entry in entries:
            entry["type"] = kind
        return entries
