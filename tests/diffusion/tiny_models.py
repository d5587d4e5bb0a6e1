"""The tiny test models live in ``nodegraph._tiny`` (``nodegraph.testing``'s ``tiny_checkpoint``); re-exported here for
the tests and bench scripts that import ``tiny_models``."""

from nodegraph._tiny import *
