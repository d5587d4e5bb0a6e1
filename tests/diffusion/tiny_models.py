"""The tiny test models live in ``nodegraph._tiny`` (``nodegraph.testing``'s ``tiny_checkpoint``); re-exported here for
the tests and bench scripts that import ``tiny_models``."""

from nodegraph._tiny import *  # noqa: F401,F403
from nodegraph._tiny import TinySD, build_tiny_sd, make_components, make_tokenizer, to_ldm_state_dict  # noqa: F401
