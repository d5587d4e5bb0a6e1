"""Run Graphs and Workflows on a server speaking ComfyUI's HTTP+WebSocket API (``nodegraph serve``, ComfyUI).

``AsyncClient`` is the asyncio flavour; ``Client`` wraps it for plain scripts (its event loop runs on a thread).
One WebSocket per client carries every prompt's progress; prompts in flight are bounded by ``concurrency``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import aiohttp

from .. import jsonsafe
from ..events import Event
from .catalogue import Catalogue
from .graph import Graph
from .remote import TERMINAL, PromptRejected, RunTracker, ref_key
from .result import Result

T = TypeVar("T")
EventCallback = Callable[[Event], None]


class ServerError(RuntimeError):
    """The server answered a request with an error (not a prompt rejection)."""


def _api_of(prompt: Any, overrides: Any = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(API JSON, local images to upload by name, extra_data) of a Graph, Workflow or API dict."""
    from .workflow import Workflow, apply_set

    if isinstance(prompt, Graph):
        api, uploads, extra = prompt.to_api(), prompt.uploads(), {}
    elif isinstance(prompt, Workflow):
        api, uploads, extra = prompt.api, {}, prompt.extra_data()
    elif isinstance(prompt, dict):
        api, uploads, extra = prompt, {}, {}
    else:
        raise TypeError(f"cannot run a {type(prompt).__name__}; give a Graph, a Workflow or API-format JSON")
    return (apply_set(api, overrides) if overrides else api), uploads, extra


class AsyncClient:
    """``async with AsyncClient("http://127.0.0.1:8188", token=...) as c: result = await c.run(graph)``."""

    def __init__(self, url: str, token: str | None = None, *, concurrency: int = 4, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Queue[tuple[str, dict[str, Any]]]] = {}
        self._connect_lock: asyncio.Lock | None = None
        self._catalogue: Catalogue | None = None
        self._prompts: dict[str, dict[str, Any]] = {}
        self._dropped: set[str] = set()

    async def __aenter__(self) -> AsyncClient:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the WebSocket and the HTTP session."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._session = self._ws = self._reader = None

    # ---- connection ------------------------------------------------------------------------------------------------

    async def _connect(self) -> aiohttp.ClientSession:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._session is None:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                self._session = aiohttp.ClientSession(headers=headers)
            if self._ws is None or self._ws.closed:
                try:
                    self._ws = await self._session.ws_connect(f"{self.url}/ws", params={"clientId": self.client_id},
                                                              heartbeat=30)
                except aiohttp.WSServerHandshakeError as exc:
                    raise ServerError(f"{self.url}/ws refused the WebSocket (HTTP {exc.status}); "
                                      f"{'check the token' if exc.status == 401 else 'is this a nodegraph server?'}"
                                      ) from None
                except aiohttp.ClientError as exc:
                    raise ServerError(f"cannot reach {self.url}: {exc}; is the server running?") from None
                self._reader = asyncio.create_task(self._read())
        return self._session

    async def _read(self) -> None:
        """Route each JSON message to the queue of its prompt (binary preview frames are skipped)."""
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = jsonsafe.loads(msg.data)
            except ValueError:
                continue
            body = data.get("data") if isinstance(data, dict) else None
            if isinstance(body, dict) and (queue := self._queues.get(str(body.get("prompt_id")))) is not None:
                queue.put_nowait((str(data.get("type")), body))

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        session = await self._connect()
        async with session.request(method, f"{self.url}{path}", **kwargs) as resp:
            body = await resp.read()
            if resp.status >= 400:
                try:
                    parsed: Any = jsonsafe.loads(body)
                except ValueError:
                    parsed = body.decode("utf-8", "replace")
                if path == "/prompt" and method == "POST":
                    raise PromptRejected(resp.status, parsed)
                raise ServerError(f"{method} {path} failed with HTTP {resp.status}: {parsed}")
            if resp.content_type == "application/json":
                return jsonsafe.loads(body) if body else None
            return body

    # ---- API -------------------------------------------------------------------------------------------------------

    async def object_info(self) -> dict[str, Any]:
        """The server's node catalogue (``GET /object_info``)."""
        return await self._request("GET", "/object_info")

    async def catalogue(self) -> Catalogue:
        """The server's catalogue, fetched once, for building graphs checked against it."""
        if self._catalogue is None:
            self._catalogue = Catalogue.from_object_info(await self.object_info())
        return self._catalogue

    async def graph(self) -> Graph:
        """An empty Graph checked against the server's catalogue."""
        return Graph(catalogue=await self.catalogue())

    async def upload(self, data: bytes, name: str, overwrite: bool = False) -> str:
        """Upload an image into the server's input folder (``POST /upload/image``); returns the stored name."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true" if overwrite else "false")
        answer = await self._request("POST", "/upload/image", data=form)
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else str(answer["name"])

    async def view(self, ref: dict[str, Any]) -> bytes:
        """Download an output file (``GET /view``) from its ``{filename, subfolder, type}`` entry."""
        kind, subfolder, filename = ref_key(ref)
        return await self._request("GET", "/view", params={"filename": filename, "subfolder": subfolder,
                                                           "type": kind})

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry, or None while it is queued or running."""
        answer = await self._request("GET", f"/history/{prompt_id}")
        return answer.get(prompt_id) if isinstance(answer, dict) else None

    async def submit(self, prompt: Any, set: Any = None) -> str:
        """Upload the graph's local images and queue the prompt; returns its id (events are kept for ``wait``)."""
        api, uploads, extra = _api_of(prompt, set)
        for name, upload in uploads.items():
            stored = await self.upload(upload.data, name)
            if stored != name:
                api = {nid: {**n, "inputs": {k: stored if v == name else v for k, v in n["inputs"].items()}}
                       for nid, n in api.items()}
        await self._connect()
        prompt_id = uuid.uuid4().hex
        self._queues[prompt_id] = asyncio.Queue()
        self._prompts[prompt_id] = api
        try:
            await self._request("POST", "/prompt", json={"prompt": api, "client_id": self.client_id,
                                                         "prompt_id": prompt_id, "extra_data": extra})
        except BaseException:
            self._queues.pop(prompt_id, None)
            self._prompts.pop(prompt_id, None)
            raise
        return prompt_id

    async def wait(self, prompt_id: str, *, on_event: EventCallback | None = None, progress: bool = False,
                   download: bool = True, raise_on_error: bool = True) -> Result:
        """Follow a submitted prompt to its end and fetch its outputs; raises on node failure or interruption
        unless ``raise_on_error`` is False."""
        queue = self._queues.get(prompt_id)
        if queue is None:
            raise KeyError(f"prompt {prompt_id} was not submitted by this client")
        tracker = RunTracker(prompt_id, self._prompts.pop(prompt_id, {}))
        bar = None
        if progress:
            from .local import progress_bar
            bar = progress_bar()
        try:
            entry = await asyncio.wait_for(self._follow(queue, tracker, on_event, bar), self.timeout)
        finally:
            self._queues.pop(prompt_id, None)
        tracker.apply_history(entry)
        files: dict[tuple[str, str, str], bytes] = {}
        if download:
            refs = {ref_key(r): r for out in tracker.outputs.values() for key in ("images", "gifs")
                    for r in (out.get(key) or []) if isinstance(r, dict) and "filename" in r}
            data = await asyncio.gather(*(self.view(r) for r in refs.values()))
            files = dict(zip(refs, data))
        result = tracker.result(files)
        if raise_on_error and result.status != "success":
            from ..executor import NodeExecutionError

            err = result.error or {}
            if result.status == "interrupted":
                raise InterruptedError(f"prompt {prompt_id} was interrupted")
            raise NodeExecutionError(_failed_event(prompt_id, err))
        return result

    async def _follow(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]], tracker: RunTracker,
                      on_event: EventCallback | None, bar: EventCallback | None) -> dict[str, Any]:
        """Feed messages to the tracker until the prompt ends; then its history entry (polled if the WebSocket
        is lost)."""
        while not tracker.done:
            try:
                kind, body = await asyncio.wait_for(queue.get(), 1.0)
            except asyncio.TimeoutError:
                if self._ws is None or self._ws.closed:
                    entry = await self.history(tracker.prompt_id)
                    if entry is not None:
                        return entry
                continue
            event = tracker.feed(kind, body)
            for fn in (on_event, bar):
                if event is not None and fn is not None:
                    fn(event)
            if kind in TERMINAL:
                tracker.done = True
        if tracker.prompt_id in self._dropped:
            self._dropped.discard(tracker.prompt_id)
            return {"outputs": {}, "status": {"status_str": "error", "messages": []}}
        for _ in range(100):  # the history entry is written before the terminal message; allow for a slow store
            entry = await self.history(tracker.prompt_id)
            if entry is not None:
                return entry
            await asyncio.sleep(0.05)
        raise ServerError(f"prompt {tracker.prompt_id} finished but has no history entry")

    async def run(self, prompt: Any, set: Any = None, **kwargs: Any) -> Result:
        """Submit a Graph, Workflow or API JSON (with ``--set`` style overrides) and wait for its Result."""
        return await self.wait(await self.submit(prompt, set), **kwargs)

    async def run_many(self, prompts: Iterable[Any], concurrency: int | None = None, **kwargs: Any) -> list[Result]:
        """Run many prompts with at most ``concurrency`` in flight (default the client's); results in order."""
        limit = asyncio.Semaphore(concurrency or self.concurrency)

        async def one(prompt: Any) -> Result:
            async with limit:
                return await self.run(prompt, **kwargs)
        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def cancel(self, prompt_id: str) -> None:
        """Drop the prompt from the queue, or interrupt it when it is running (its ``wait`` then ends with status
        ``interrupted``)."""
        queue = await self._request("GET", "/queue")
        pending = {str(item[1]) for item in (queue or {}).get("queue_pending", []) if len(item) > 1}
        await self._request("POST", "/queue", json={"delete": [prompt_id]})
        if prompt_id in pending and (waiting := self._queues.get(prompt_id)) is not None:
            after = await self._request("GET", "/queue")
            running = {str(item[1]) for item in (after or {}).get("queue_running", []) if len(item) > 1}
            if prompt_id not in running:  # dropped before it started: it gets no messages and no history entry
                self._dropped.add(prompt_id)
                waiting.put_nowait(("execution_interrupted", {"prompt_id": prompt_id, "executed": []}))
                return
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def stream(self, prompt: Any, set: Any = None, **kwargs: Any) -> AsyncIterator[Event]:
        """``async for event in client.stream(graph)``: the events of one run, the same kinds a local run emits."""
        prompt_id = await self.submit(prompt, set)
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        kwargs.setdefault("raise_on_error", False)
        task = asyncio.create_task(self.wait(prompt_id, on_event=events.put_nowait, **kwargs))
        task.add_done_callback(lambda _: events.put_nowait(None))
        self.last_prompt_id = prompt_id
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            if not task.done():
                await self.cancel(prompt_id)
            self.last_result = await task


def _failed_event(prompt_id: str, err: dict[str, Any]) -> Any:
    from ..events import RunFailed

    return RunFailed(prompt_id, str(err.get("node_id") or ""), str(err.get("node_type") or ""),
                     str(err.get("exception_type") or ""), str(err.get("exception_message") or ""))


class Client:
    """The blocking flavour of AsyncClient for scripts and notebooks (``with Client(url) as c: c.run(g)``)."""

    def __init__(self, url: str, token: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nodegraph-client", daemon=True)
        self._thread.start()
        self.aio = AsyncClient(url, token, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the client's event loop thread."""
        if self._thread.is_alive():
            self._call(self.aio.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def catalogue(self) -> Catalogue:
        """The server's catalogue."""
        return self._call(self.aio.catalogue())

    def graph(self) -> Graph:
        """An empty Graph checked against the server's catalogue."""
        return Graph(catalogue=self.catalogue())

    def submit(self, prompt: Any, set: Any = None) -> str:
        """Queue a prompt; returns its id."""
        return self._call(self.aio.submit(prompt, set))

    def wait(self, prompt_id: str, **kwargs: Any) -> Result:
        """Wait for a submitted prompt's Result (callbacks run on the client's thread)."""
        return self._call(self.aio.wait(prompt_id, **kwargs))

    def run(self, prompt: Any, set: Any = None, **kwargs: Any) -> Result:
        """Run a Graph, Workflow or API JSON on the server and return its Result."""
        return self._call(self.aio.run(prompt, set, **kwargs))

    def run_many(self, prompts: Iterable[Any], concurrency: int | None = None, **kwargs: Any) -> list[Result]:
        """Run many prompts, at most ``concurrency`` at a time; results in order."""
        return self._call(self.aio.run_many(list(prompts), concurrency, **kwargs))

    def cancel(self, prompt_id: str) -> None:
        """Drop or interrupt a prompt."""
        self._call(self.aio.cancel(prompt_id))

    def upload(self, data: bytes, name: str) -> str:
        """Upload an image to the server's input folder; returns its stored name."""
        return self._call(self.aio.upload(data, name))
