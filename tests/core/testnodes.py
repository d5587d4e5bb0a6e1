"""A plugin used by the core tests: trivial nodes, a slow one, a failing one, a non-deterministic one."""

from __future__ import annotations

import time

from nodegraph import Float, Int, Link, Node, NodeOutput, Output, String, hookimpl


class Const(Node):
    """An integer constant."""

    INPUTS = {"value": Int(0, min=-1000, max=1000)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value):
        return (value,)


class AddOne(Node):
    """x + 1."""

    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x):
        return (x + 1,)


class Add(Node):
    """a + b."""

    INPUTS = {"a": Link("INT"), "b": Link("INT", optional=True)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, a, b=0):
        return (a + b,)


class Sink(Node):
    """Output node that shows its input."""

    OUTPUT_NODE = True
    INPUTS = {"value": Link("*")}

    def execute(self, ctx, value):
        return NodeOutput((), {"value": [value]})


class Blob(Node):
    """Produces ``kb`` kilobytes (for cache byte-bound tests)."""

    INPUTS = {"kb": Int(1, min=1, max=100000), "tag": String("")}
    OUTPUTS = (Output("BLOB"),)

    def execute(self, ctx, kb, tag):
        return (bytes(kb * 1024),)


class BlobSink(Node):
    """Output node for BLOBs."""

    OUTPUT_NODE = True
    INPUTS = {"blob": Link("BLOB")}

    def execute(self, ctx, blob):
        return NodeOutput((), {"size": [len(blob)]})


class Slow(Node):
    """Counts to ``steps``, sleeping a bit each step, reporting progress and checking interruption."""

    INPUTS = {"x": Link("INT"), "steps": Int(10, min=1, max=10000), "delay": Float(0.01, min=0, max=1)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x, steps, delay):
        for i in range(steps):
            time.sleep(delay)
            ctx.progress(i + 1, steps)
        return (x,)


class Fail(Node):
    """Always raises."""

    INPUTS = {"x": Link("INT"), "message": String("boom")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x, message):
        raise RuntimeError(message)


class Noise(Node):
    """A non-deterministic counter."""

    DETERMINISTIC = False
    INPUTS = {}
    OUTPUTS = (Output("INT"),)
    calls = 0

    def execute(self, ctx):
        type(self).calls += 1
        return (type(self).calls,)


class ReadModel(Node):
    """Reads a 'model' file by absolute path and returns its length (declares it for provenance)."""

    INPUTS = {"path": String("")}
    OUTPUTS = (Output("INT"),)

    @classmethod
    def model_files(cls, config, **constants):
        return [constants["path"]]

    @classmethod
    def fingerprint(cls, config, **constants):
        import os
        st = os.stat(constants["path"])
        return (st.st_size, st.st_mtime_ns)

    def execute(self, ctx, path):
        with open(path, "rb") as fh:
            return (len(fh.read()),)


class SeedPlus(Node):
    """seed + offset (a seed widget followed by the editor's control_after_generate value)."""

    INPUTS = {"seed": Int(0, min=0, max=2**64 - 1, control_after_generate=True), "offset": Int(0, min=-100, max=100)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, seed, offset):
        return (seed + offset,)


@hookimpl
def nodegraph_nodes():
    """The test nodes."""
    return [Const, AddOne, Add, Sink, Blob, BlobSink, Slow, Fail, Noise, ReadModel, SeedPlus]
