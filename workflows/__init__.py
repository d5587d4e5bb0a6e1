"""Workflow templates shipped with nodegraph (API-format JSON); installed as the package data ``nodegraph.workflows``."""
