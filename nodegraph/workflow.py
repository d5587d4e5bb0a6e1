"""The workflow format: ComfyUI's API JSON parsed with pydantic; loading from .json files, PNG text chunks, the
EXIF of WEBP images and the tags of saved videos and audio."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, RootModel, ValidationError

from . import jsonsafe


class WorkflowFormatError(ValueError):
    """The file or body is not a workflow we can read; the message says what to do."""


class NodeMetaInfo(BaseModel):
    """The ``_meta`` of a prompt node (title, and the node version it was saved with)."""

    model_config = ConfigDict(extra="allow")
    title: str | None = None
    version: str | None = None


class PromptNode(BaseModel):
    """One node of an API-format workflow."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    class_type: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: NodeMetaInfo = Field(default_factory=NodeMetaInfo, alias="_meta")


class Workflow(RootModel[dict[str, PromptNode]]):
    """An API-format workflow: ``{node_id: {class_type, inputs, _meta}}``."""

    _source: dict[str, Any] | None = PrivateAttr(default=None)

    @property
    def source(self) -> dict[str, Any] | None:
        """The JSON it was parsed from (kept as given, for the PNG ``prompt`` chunk and history)."""
        return self._source

    def nodes(self) -> dict[str, PromptNode]:
        """The nodes by id."""
        return self.root

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (what ComfyUI stores in the PNG ``prompt`` chunk)."""
        return {nid: n.model_dump(by_alias=True, exclude_none=True) for nid, n in self.root.items()}


def is_link(value: Any) -> bool:
    """A link is ``[source_id, output_index]`` with a string id and an int index."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def unwrap(value: Any) -> Any:
    """ComfyUI wraps list-valued constants as ``{"__value__": [...]}``."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def is_ui_format(data: Any) -> bool:
    """Whether ``data`` is the editor's UI format (nodes and links arrays) rather than the API format."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def parse_workflow(data: Any) -> Workflow:
    """Parse API-format JSON (already decoded) into a Workflow; raise WorkflowFormatError with the fix."""
    if is_ui_format(data):
        raise WorkflowFormatError("this is the editor's UI format (nodes/links arrays); convert it with the node "
                                  "catalogue (load_workflow does) or export it with 'Save (API Format)'")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data.get("prompt", {}):
        data = data["prompt"]  # a POST /prompt body
    if not isinstance(data, dict) or not data:
        raise WorkflowFormatError("a workflow is a JSON object {node_id: {class_type, inputs}}; got "
                                  f"{type(data).__name__ if data else 'an empty object'}")
    try:
        workflow = Workflow.model_validate({str(k): v for k, v in data.items()})
    except ValidationError as exc:
        problems = "; ".join(f"node {'.'.join(str(p) for p in e['loc'][:2])}: {e['msg']}" for e in exc.errors()[:10])
        raise WorkflowFormatError(f"not an API-format workflow: {problems}") from None
    workflow._source = data
    return workflow


def read_png_chunks(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (``prompt``, ``workflow``, ``nodegraph``, …)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}


#: EXIF tags ComfyUI writes ``key:json`` strings to (SaveAnimatedWEBP: ``prompt`` in Model 0x0110, the extra PNG
#: info, e.g. ``workflow``, from Make 0x010f downwards); a few savers of custom packs use these others.
EXIF_TEXT_TAGS = tuple(range(0x0110, 0x0100, -1)) + (0x8298, 0x9286)
_EXIF_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63}):")


def read_image_text(path: Path) -> tuple[str, dict[str, str]]:
    """An image's format and the workflow text it carries: PNG text chunks, or the ``key:json`` strings ComfyUI
    writes into the EXIF of WEBP (and other EXIF-carrying) images."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            fmt = (img.format or "image").upper()
            if fmt == "PNG":
                img.load()
                return fmt, {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
            exif = img.getexif()
    except (UnidentifiedImageError, OSError) as exc:
        raise WorkflowFormatError(f"{path} is neither JSON nor an image Pillow can read ({exc}); videos and audio "
                                  "are read by their extension (.mp4, .webm, .flac, …)") from None
    texts: dict[str, str] = {}
    for tag in EXIF_TEXT_TAGS:
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace").lstrip("\0")
        if isinstance(value, str) and (m := _EXIF_KEY.match(value)) and m.group(1) not in texts:
            texts[m.group(1)] = value[m.end():].rstrip("\0")
    return fmt, texts


@dataclass
class WorkflowFile:
    """A workflow read from a file: the decoded JSON, the image's other entries, and where it was found."""

    data: Any
    extra: dict[str, Any]
    #: ``JSON``, ``PNG prompt chunk``, ``WEBP EXIF prompt``, ``PNG workflow chunk``, …
    source: str
    #: Whether the file is an image, video or audio file (its ``extra`` may carry a provenance manifest).
    image: bool = False

    def describe(self) -> str:
        """What was read, e.g. ``PNG prompt chunk, API format`` or ``editor format (converted)``."""
        kind = "editor format (converted)" if is_ui_format(self.data) else "API format"
        return kind if self.source == "JSON" else f"{self.source}, {kind}"


def read_workflow_file(path: Path) -> WorkflowFile:
    """Read a workflow from a .json file (API or editor format) or a saved file that carries one: a PNG's ``prompt``
    text chunk (else its ``workflow``), an animated PNG's ``comf`` chunks, the ``prompt:``/``workflow:`` EXIF
    strings of a WEBP, or the tags of a video or audio file, as ComfyUI writes them (see ``read_media_text``).
    Raises WorkflowFormatError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WorkflowFormatError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    if head[:1] in (b"{", b"[") or head.startswith(b"\xef\xbb\xbf") or not head:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise WorkflowFormatError(f"{path} is not UTF-8 JSON: {exc}") from None
        return WorkflowFile(_decode(path, text, "JSON"), {}, "JSON")
    fmt, texts, where = read_media_text(path)
    key = "prompt" if "prompt" in texts else "workflow" if "workflow" in texts else None
    if key is None:
        saver = {"EXIF": "SaveImage or SaveAnimatedWEBP", "tag": "SaveVideo, SaveWEBM or SaveAudio"}.get(
            where, "SaveImage or SaveAnimatedPNG")
        entry = {"chunk": "text chunk", "comf chunk": "text or comf chunk", "EXIF": "EXIF entry"}.get(where, where)
        kind = "video or audio file" if where == "tag" else "image"
        raise WorkflowFormatError(f"{path} is a {fmt} {kind} that carries no workflow (no 'prompt' or 'workflow' "
                                  f"{entry}); was it saved by {saver}?")
    extra = {k: _maybe_json(v) for k, v in texts.items() if k != key}
    source = f"{fmt} {where} {key}" if where == "EXIF" else f"{fmt} {key} {where}"
    return WorkflowFile(_decode(path, texts[key], source), extra, source, image=True)


def read_media_text(path: Path) -> tuple[str, dict[str, str], str]:
    """The workflow text a saved image, video or audio file carries, with its format and where it lay: PNG text
    chunks (``chunk``) or, failing those, SaveAnimatedPNG's ``comf`` chunks (``APNG``, ``comf chunk``); WEBP EXIF
    (``EXIF``); the container tags of videos and audio by their extension (``MP4``/``WEBM``/``FLAC``…, ``tag``)."""
    from .media import MediaError, is_tagged_media, read_apng_metadata, read_container_tags

    if is_tagged_media(path):
        try:
            fmt, tags = read_container_tags(path)
        except MediaError as exc:
            raise WorkflowFormatError(f"{path} cannot be read for a workflow: {exc}") from None
        return fmt, tags, "tag"
    fmt, texts = read_image_text(path)
    if fmt != "PNG":
        return fmt, texts, "EXIF"
    if "prompt" not in texts and "workflow" not in texts and (comf := read_apng_metadata(path)):
        return "APNG", comf, "comf chunk"
    return fmt, texts, "chunk"


def load_json_or_png(path: Path) -> tuple[Any, dict[str, Any]]:
    """Read a workflow file (see ``read_workflow_file``): (decoded JSON, the image's other entries, e.g. ``workflow``)."""
    loaded = read_workflow_file(path)
    return loaded.data, loaded.extra


def _decode(path: Path, text: str, source: str) -> Any:
    try:
        return jsonsafe.loads(text)
    except ValueError as exc:
        what = "" if source == "JSON" else f" (its {source})"
        raise WorkflowFormatError(f"{path}{what} is not valid JSON: {exc}") from None


def _maybe_json(text: str) -> Any:
    try:
        return jsonsafe.loads(text)
    except ValueError:
        return text
