"""The ``nodegraph`` command line: run, validate, nodes, plugins, serve, inspect, train-default."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import EngineConfig
from .events import Event, NodeFinished, NodeProgress, NodeStarted, RunFailed
from .workflow import WorkflowFormatError

EXIT_OK, EXIT_NODE_FAILURE, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C
#: ``serve --preview-method`` choices (server.settings.PREVIEW_METHODS, not imported: it would load aiohttp).
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


def _ram_budget(text: str) -> int:
    from .models.memory import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _vram_budget(text: str) -> int:
    from .models.memory import parse_vram_bytes

    try:
        return parse_vram_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="home folder (inputs, outputs, models, database); "
                        "default $NODEGRAPH_HOME or the per-user data folder")
    parser.add_argument("--models-dir", type=Path, help="models folder (default HOME/models or $NODEGRAPH_MODELS)")
    parser.add_argument("--plugin-dir", type=Path, action="append", default=[],
                        help="extra folder of drop-in plugins (repeatable; also $NODEGRAPH_PLUGIN_PATH)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="allow loading pickle model files (.ckpt/.pt/.bin), which can run arbitrary code")
    parser.add_argument("--deterministic", action="store_true", help="ask torch for deterministic GPU kernels")
    parser.add_argument("--ram-budget", type=_ram_budget, default=None, metavar="SIZE",
                        help="RAM that loaded models may hold, e.g. 6G, 512M or 40%% of RAM (default 50%%); the "
                             "least recently used models are unloaded past it and reloaded when needed")
    parser.add_argument("--vram-budget", type=_vram_budget, default=None, metavar="SIZE",
                        help="GPU memory that resident models may hold, e.g. 6G or 80%% of the GPU's (default "
                             "90%%); modules move off the GPU, or load partly, past it")
    parser.add_argument("-v", "--verbose", action="store_true")


class _StrictParser(argparse.ArgumentParser):
    """A sub-command parser that accepts only whole flag names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    # No abbreviated flags anywhere (``--tok`` must not pass for ``--token``).
    parser = argparse.ArgumentParser(prog="nodegraph", description="Run and serve diffusion node-graph workflows.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_StrictParser)

    run = sub.add_parser("run", help="run a workflow (.json in API or editor format, or a .png/.webp that carries "
                         "one)")
    run.add_argument("workflow", type=Path)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.INPUT=VALUE",
                     help="override a constant input, e.g. --set 3.seed=42 (value parsed as JSON when it can be)")
    run.add_argument("--output-dir", type=Path, help="save output images directly into this folder")
    run.add_argument("--strict", action="store_true",
                     help="for a PNG: refuse to run when this installation differs from the image's manifest")
    run.add_argument("--backend", choices=["local", "ray"], default="local")
    run.add_argument("--ray-address", default=None)
    _common(run)

    validate = sub.add_parser("validate", help="validate a workflow and report every problem")
    validate.add_argument("workflow", type=Path)
    _common(validate)

    nodes = sub.add_parser("nodes", help="list the installed nodes")
    nodes.add_argument("--json", action="store_true", help="print the catalogue exactly as GET /object_info")
    _common(nodes)

    plugins = sub.add_parser("plugins", help="list plugins, their nodes and their errors")
    _common(plugins)

    serve = sub.add_parser("serve", help="start the HTTP/WebSocket server (ComfyUI API)")
    serve.add_argument("--listen", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--token", default=None,
                       help="auth token of at least 16 characters (or $NODEGRAPH_TOKEN); generated off loopback "
                       "when neither is given")
    serve.add_argument("--max-upload-mb", type=int, default=50)
    serve.add_argument("--backend", choices=["process", "local", "ray"], default="process",
                       help="process (default): prompts run in a worker process that is restarted when a node "
                       "ignores an interrupt; local: in the server process; ray: on a Ray cluster")
    serve.add_argument("--interrupt-grace", type=float, default=10.0, metavar="SECONDS",
                       help="with --backend process: how long a node may ignore an interrupt before its worker "
                       "process is ended and restarted (default 10)")
    serve.add_argument("--recover", action="store_true",
                       help="if the queue database is damaged, move it aside (with a timestamp) and start a fresh "
                       "one holding every prompt that can still be read")
    serve.add_argument("--ray-address", default=None)
    serve.add_argument("--preview-method", choices=PREVIEW_METHODS, default="none",
                       help="live sampling previews (binary WebSocket frames): none (default, as ComfyUI) sends them "
                       "only to clients that ask, such as the editor; auto or latent2rgb sends them to every client; "
                       "taesd too, decoded by the model's TAESD (taesd_decoder.safetensors … in models/vae_approx)")
    _common(serve)

    inspect = sub.add_parser("inspect", help="show the workflow, manifest and parameters carried by a saved PNG, WEBP, video or audio file")
    inspect.add_argument("image", type=Path)
    _common(inspect)

    stubs = sub.add_parser("stubs", help="write type stubs of the installed nodes (plugins included) for editors "
                           "and type checkers using the Python API (nodegraph.Graph)")
    stubs.add_argument("--output", "-o", type=Path, default=None,
                       help="folder or .pyi file (default typings/nodegraph_catalogue.pyi, where pyright looks; "
                       "for mypy set mypy_path = typings)")
    _common(stubs)

    train = sub.add_parser("train-default", help="train the embedded default model (see nodegraph/training)")
    train.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def make_config(args: argparse.Namespace) -> EngineConfig:
    """An EngineConfig from the common options."""
    kwargs: dict[str, Any] = {"plugin_dirs": list(getattr(args, "plugin_dir", []) or []),
                              "allow_unsafe_pickle": getattr(args, "allow_unsafe_pickle", False),
                              "force_cpu": getattr(args, "cpu", False),
                              "deterministic": getattr(args, "deterministic", False),
                              "model_ram_budget": getattr(args, "ram_budget", None),
                              "model_vram_budget": getattr(args, "vram_budget", None)}
    if getattr(args, "home", None):
        kwargs["home"] = args.home
    if getattr(args, "models_dir", None):
        kwargs["models_dir"] = args.models_dir
    if getattr(args, "output_dir", None):
        kwargs["output_dir"] = args.output_dir
    return EngineConfig(**kwargs)


def apply_overrides(api: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``ID.INPUT=VALUE`` overrides to API-format JSON; raise ValueError naming a bad one."""
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not sep or not dot or not input_name:
            raise ValueError(f"--set {item!r}: expected ID.INPUT=VALUE, e.g. --set 3.seed=42")
        if node_id not in api:
            raise ValueError(f"--set {item!r}: the workflow has no node {node_id!r} (nodes: {', '.join(api)})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        api[node_id].setdefault("inputs", {})[input_name] = value
    return api


class ProgressPrinter:
    """An event subscriber drawing a progress bar per long node on stderr."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self._bar: Any = None
        self._node: str | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeStarted):
            self._close()
            self._node = f"{event.node_id} {event.class_type}"
        elif isinstance(event, NodeProgress):
            if self._bar is None:
                from tqdm import tqdm
                self._bar = tqdm(total=event.max, desc=self._node, file=self.stream, leave=True,
                                 dynamic_ncols=True)
            self._bar.total = event.max
            self._bar.n = event.value
            if event.text is not None:
                self._bar.set_postfix_str(event.text, refresh=False)
            self._bar.refresh()
        elif isinstance(event, (NodeFinished, RunFailed)):
            self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _read(engine: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Read a workflow file, saying on stderr what was read: (API JSON, the image's other entries, is an image)."""
    from .workflow import read_workflow_file

    loaded = read_workflow_file(path)
    print(f"read {path}: {loaded.describe()}", file=sys.stderr)
    return engine.to_api(loaded.data), loaded.extra, loaded.image


def cmd_run(args: argparse.Namespace, config: EngineConfig) -> int:
    from .engine import Engine
    from .events import EventBus
    from .validation import ValidationReport

    engine = Engine(config)
    config.ensure_dirs()
    try:
        api, extra, is_image = _read(engine, args.workflow)
        if is_image:
            from .provenance import MANIFEST_CHUNK, compare_with_installation

            differences = compare_with_installation(extra.get(MANIFEST_CHUNK), engine)
            for line in differences:
                print(f"differs: {line}", file=sys.stderr)
            if differences and args.strict:
                print(f"refusing to run with --strict: {len(differences)} difference(s) from the image's "
                      "manifest", file=sys.stderr)
                return EXIT_INVALID
        api = apply_overrides(api, args.overrides)
        prompt = engine.prepare(api)
    except ValidationReport as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_INVALID
    except (WorkflowFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    extra_data = {"extra_pnginfo": {"workflow": extra["workflow"]}} if "workflow" in extra else {}
    bus = EventBus([ProgressPrinter()])
    from .backends import create_backend

    try:
        backend = create_backend(getattr(args, "backend", "local"), engine,
                                 address=getattr(args, "ray_address", None))
    except (RuntimeError, ValueError) as exc:  # Ray missing, cluster unreachable or too small
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        result = backend.run(prompt, bus=bus, extra_data=extra_data)
    finally:
        backend.close()
    if result.status == "error" and result.error is not None:
        err = result.error
        print(f"error: node {err.node_id} ({err.class_type}) failed: {err.exception_type}: "
              f"{err.exception_message}", file=sys.stderr)
        if args.verbose:
            print(err.traceback, file=sys.stderr)
        for name, value in err.inputs.items():
            print(f"  input {name} = {value}", file=sys.stderr)
        return EXIT_NODE_FAILURE
    if result.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_NODE_FAILURE
    for node_id, ui in result.outputs.items():
        for image in ui.get("images", []):
            path = config.folder_for(image.get("type") or "output") / image.get("subfolder", "") / image["filename"]
            print(path)
        for text in ui.get("text", []):
            print(f"{node_id}: {text}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, config: EngineConfig) -> int:
    from .engine import Engine
    from .validation import ValidationReport

    engine = Engine(config)
    try:
        api, _, _ = _read(engine, args.workflow)
        prompt = engine.prepare(api)
    except ValidationReport as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_INVALID
    except (WorkflowFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"ok: {len(prompt.nodes)} node(s), output(s) {', '.join(prompt.outputs)}")
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace, config: EngineConfig) -> int:
    from .registry import Registry

    registry = Registry.from_config(config)
    if args.json:
        json.dump(registry.object_info(config), sys.stdout)
        print()
        return EXIT_OK
    for name, d in sorted(registry.nodes.items(), key=lambda kv: (kv[1].meta.category, kv[0])):
        print(f"{d.meta.category:<24} {name:<32} {d.meta.version:<8} {d.plugin}")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace, config: EngineConfig) -> int:
    from .registry import Registry

    registry = Registry.from_config(config)
    broken = registry.check_catalogue(config)  # nodes whose catalogue entry raises are named under their plugin
    for info in registry.plugins.values():
        status = "ok" if info.ok else "ERROR"
        version = f" {info.version}" if info.version else ""
        print(f"{status:<5} {info.name}{version} [{info.source}] {len(info.nodes)} node(s)")
        for err in info.errors:
            print(f"      {err}")
    return EXIT_OK if not registry.errors and not broken else EXIT_NODE_FAILURE


def cmd_serve(args: argparse.Namespace, config: EngineConfig) -> int:
    from .server.app import serve

    if args.preview_method == "taesd":  # read by diffusion.preview, in this process and the workers it starts
        import os

        os.environ["NODEGRAPH_PREVIEW_TAESD"] = str(config.model_dir("vae_approx"))
    return serve(config, listen=args.listen, port=args.port, token=args.token,
                 max_upload_mb=args.max_upload_mb, backend=args.backend, ray_address=args.ray_address,
                 interrupt_grace_s=args.interrupt_grace, recover=args.recover, preview_method=args.preview_method)


def cmd_inspect(args: argparse.Namespace, config: EngineConfig) -> int:
    from .provenance import inspect_image

    try:
        print(inspect_image(args.image))
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def cmd_stubs(args: argparse.Namespace, config: EngineConfig) -> int:
    from .engine import Engine
    from .pyapi.stubs import write_stubs

    print(write_stubs(Engine(config), args.output))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nodegraph`` command."""
    args = build_parser().parse_args(argv)
    if args.command == "train-default":
        from .training.train_default import main as train_main
        return train_main(args.args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    config = make_config(args)
    handlers = {"run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes, "plugins": cmd_plugins,
                "serve": cmd_serve,
                "inspect": cmd_inspect, "stubs": cmd_stubs}
    try:
        return handlers[args.command](args, config)
    except KeyboardInterrupt:  # the terminal's Ctrl-C (nodes' own KeyboardInterrupts are node failures elsewhere)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
