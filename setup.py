"""Packaging that pyproject.toml cannot say: the repository's ``nodes/`` and ``workflows/`` folders install as
``nodegraph.nodes`` and ``nodegraph.workflows``, so a wheel holds no top-level name but ``nodegraph``."""

from setuptools import find_packages, setup

#: Subpackages whose folder lies outside ``nodegraph/`` in the repository (the layout the design asks for).
MAPPED = {"nodegraph.nodes": "nodes", "nodegraph.workflows": "workflows"}

setup(packages=find_packages(include=["nodegraph", "nodegraph.*"]) + list(MAPPED), package_dir=MAPPED)
