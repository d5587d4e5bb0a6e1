"""The plugin hooks of nodegraph. Built-in node packs implement them exactly as third-party plugins do.

A plugin is a module (or any object) with functions named after these hooks and marked with
``@nodegraph.hookimpl``. An implementation may accept any subset of a hook's parameters, by name.

The registry calls every hook plugin by plugin, so an implementation that raises is reported against its plugin
(``nodegraph plugins`` and the log) while the others' answers are kept. Hook wrappers
(``@hookimpl(wrapper=True)``) are honoured: they run around each plugin's call. A marked function whose name is
not one of these hooks is reported as a plugin error (a misspelt hook would otherwise never run); mark a hook of
your own with ``@hookimpl(optionalhook=True)`` to silence that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypedDict, Union

import pluggy

if TYPE_CHECKING:
    from aiohttp import web

    from .config import EngineConfig
    from .engine import Engine
    from .node import Node

PROJECT = "nodegraph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class LinkTypeInfo(TypedDict, total=False):
    """The long form of a link type declared by ``nodegraph_types``."""

    #: One line saying what a value of the type is.
    description: str
    #: Types whose inputs also accept this type (``{"SDXL_MODEL": {"subtype_of": ["MODEL"]}}``).
    subtype_of: list[str]


#: A declared link type: a one-line description, or the long form.
LinkTypeDeclaration = Union[str, LinkTypeInfo]


# ---- node catalogue -------------------------------------------------------------------------------------------------

@hookspec
def nodegraph_nodes() -> Sequence[type[Node]]:
    """Return the node classes this plugin provides.

    Called once, when the registry loads. Each class must be a ``nodegraph.Node`` subclass that implements
    ``execute``; it is checked with ``nodegraph.node.describe`` and an invalid one is reported against the plugin
    (the plugin's other nodes still load). A node name (``NAME``, default the class name) that another plugin
    registered first is refused with an error naming both plugins.

    :return: a list of node classes (may be empty).
    """


@hookspec
def nodegraph_types() -> dict[str, LinkTypeDeclaration]:
    """Return the link types this plugin adds, as ``{TYPE_NAME: description}``.

    Called once, when the registry loads. A value is either a one-line description or a
    :class:`LinkTypeInfo` mapping ``{"description": ..., "subtype_of": [TYPES]}``. Validation uses ``subtype_of``:
    an output of the declared type may feed an input of any type it lists (transitively). Built-in type names
    (``nodegraph.inputs.LINK_TYPES``) cannot be redeclared; several plugins may declare the same new type.

    :return: ``{TYPE_NAME: description or LinkTypeInfo}``.
    """


# ---- files and models -----------------------------------------------------------------------------------------------

@hookspec
def nodegraph_model_folders() -> dict[str, list[str]]:
    """Return model folder kinds this plugin adds, as ``{folder_name: [file extensions]}``.

    Each kind becomes a folder under the models directory, listed by ``GET /models`` and searched by combo
    inputs that name it. Extensions are lower-case and start with a dot (``".safetensors"``); extensions for an
    existing kind are added to it.

    :return: ``{folder_name: [extensions]}``.
    """


# ---- server ---------------------------------------------------------------------------------------------------------

@hookspec
def nodegraph_routes(app: web.Application, engine: Engine, config: EngineConfig) -> Sequence[web.AbstractRouteDef]:
    """Return aiohttp route definitions to add to the server (each mounted at ``/`` and ``/api``).

    Called once per server application, before the editor's static routes (which therefore never shadow a
    plugin's route).

    :param app: the aiohttp application being built; store per-app state with ``app[web.AppKey(...)]``.
    :param engine: the engine serving the prompts (its ``registry`` and ``config``).
    :param config: the engine's configuration (home, model and output folders), same as ``engine.config``.
    :return: a list of ``aiohttp.web.RouteDef`` (``web.get(...)``, or a ``web.RouteTableDef``).
    """


@hookspec
def nodegraph_web_directory() -> str | None:
    """Return a folder of JavaScript extensions for the editor, or None.

    Every ``*.js`` file under the folder is served at ``/extensions/PLUGIN_NAME/...`` and listed by
    ``GET /extensions``, so the editor loads it. A folder that does not exist is ignored.

    :return: an absolute folder path, or None.
    """
