"""nodegraph's Python API, notebook style (each ``# %%`` cell runs in Jupyter/VS Code, or run the whole file).

Runs on the embedded model ``nodegraph-shapes-v1`` (64×64, a few steps, CPU is fine). Images and files go to the
nodegraph home folder ($NODEGRAPH_HOME, else the per-user data folder); the contact sheet is written to
``--out`` (default: the current folder). With NODEGRAPH_URL (and NODEGRAPH_TOKEN) set, the last cell runs the same
graph on that server.

Run: python examples/python_api.py [--out FOLDER]
"""

# %% Build a graph: node classes are methods, inputs are keyword arguments, outputs are typed handles.
from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from nodegraph import Graph, Workflow
from nodegraph.events import NodeProgress
from nodegraph.pyapi import GraphBuildError

parser = argparse.ArgumentParser(description="the Python API, cell by cell")
parser.add_argument("--out", type=Path, default=Path("."))
args, _ = parser.parse_known_args()
ROOT = Path(__file__).resolve().parent.parent

g = Graph()  # the in-process engine: models and node results stay cached between runs
model, clip, vae = g.CheckpointLoaderSimple(ckpt_name="nodegraph-shapes-v1")
pos = g.CLIPTextEncode(clip=clip, text="a red circle on a blue background")
neg = g.CLIPTextEncode(clip=clip, text="")
latent = g.EmptyLatentImage(width=64, height=64, batch_size=1)
sampled = g.KSampler(model=model, positive=pos, negative=neg, latent_image=latent, seed=1, steps=4, cfg=4.0)
image = g.VAEDecode(samples=sampled, vae=vae)
save = g.SaveImage(images=image, filename_prefix="python_api")

# %% Mistakes fail when the graph is built, naming both ends.
try:
    g.KSampler(model=clip, positive=pos, negative=neg, latent_image=latent)
except GraphBuildError as exc:
    print("caught:", exc)

# %% Run in-process; results are looked up by handle.
result = g.run(progress=True)  # tqdm bars (widgets in a notebook)
print(result)
print("saved:", result.paths(save))
print("image:", result[save][0].size, "| latent:", tuple(result[sampled]["samples"].shape))
print("slowest node:", max(result.timings, key=lambda nid: result.timings[nid]))
print("models used:", [m.get("name") for m in (result.manifest or {}).get("models", {}).values()])

# %% Change the seed: only the sampler and what follows it run again.
g.set(sampled.node, "seed", 2)
again = g.run()
print("executed:", again.executed, "| from the cache:", again.cached)

# %% Events as they happen (the same kinds the server streams), and cancelling.
async def watch() -> None:
    g.set(sampled.node, "seed", 3)
    stream = g.stream()
    async for event in stream:
        if isinstance(event, NodeProgress):
            print(f"  step {event.value}/{event.max}")
            if event.value >= 2:
                stream.cancel()
    print("stream ended:", stream.result.status if stream.result else stream.error)

asyncio.run(watch())

# %% Saved workflows (JSON or PNG, API or editor format) with `nodegraph run --set` overrides.
wf = Workflow.load(ROOT / "workflows" / "txt2img.json")
out = wf.run(set={"3.seed": 5, "3.steps": 4})
print("workflow run:", out, out.paths("9"))

# %% A sweep: 2 seeds × 2 guidance scales, a table and a contact sheet.
sweep = wf.sweep({"3.seed": range(2), "3.cfg": [3.0, 6.0]}, set={"3.steps": 4})
for row in sweep.table():
    print(row)
args.out.mkdir(parents=True, exist_ok=True)
sheet = sweep.contact_sheet()
sheet.save(args.out / "python_api_sweep.png")
print("contact sheet:", args.out / "python_api_sweep.png", sheet.size)

# %% Round trip to ComfyUI's API format.
g.save(args.out / "python_api_graph.json")
assert Graph.from_api(g.to_api()).to_api() == g.to_api()

# %% The same graph on a server (nodegraph serve, or ComfyUI), when NODEGRAPH_URL is set.
if os.environ.get("NODEGRAPH_URL"):
    from nodegraph import Client

    with Client(os.environ["NODEGRAPH_URL"], token=os.environ.get("NODEGRAPH_TOKEN")) as client:
        remote = client.run(g)
        print("remote:", remote, remote[save][0].size)
