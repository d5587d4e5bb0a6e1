"""Subgraph blueprints shipped with nodegraph (package data; see ``nodegraph.blueprints``)."""
