"""The workflow format: ComfyUI's API JSON parsed with pydantic; loading from .json files and PNG text chunks."""

from __future__ import annotations

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


def load_json_or_png(path: Path) -> tuple[Any, dict[str, Any]]:
    """Read a workflow file: returns (decoded JSON, extra) where extra holds PNG chunks such as ``workflow``."""
    path = Path(path)
    if not path.exists():
        raise WorkflowFormatError(f"{path} does not exist")
    if path.suffix.lower() == ".png":
        chunks = read_png_chunks(path)
        if "prompt" not in chunks:
            raise WorkflowFormatError(f"{path} carries no 'prompt' text chunk; was it saved by SaveImage?")
        extra = {k: _maybe_json(v) for k, v in chunks.items() if k != "prompt"}
        text = chunks["prompt"]
    else:
        text, extra = path.read_text(encoding="utf-8"), {}
    try:
        return jsonsafe.loads(text), extra
    except ValueError as exc:
        raise WorkflowFormatError(f"{path} is not valid JSON: {exc}") from None


def _maybe_json(text: str) -> Any:
    try:
        return jsonsafe.loads(text)
    except ValueError:
        return text
