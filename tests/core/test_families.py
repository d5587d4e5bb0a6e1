"""The family table (nodegraph.diffusion.families): every entry names a real attribute, and lookups dispatch."""

from __future__ import annotations

import inspect

import pytest

from nodegraph.diffusion import families
from nodegraph.diffusion.flow.sampling import FlowDenoiser


def _refs() -> list[str]:
    refs = [r for pair in families.TRANSFORMER_FILES + families.VAE_FILES + families.CLIP_FILES for r in pair]
    refs += list(families.CHECKPOINT_FILES)
    for table in (families.CLIP_LOADERS, families.TEXT_ENCODERS, families.DENOISERS, families.SAMPLERS,
                  families.CUSTOM_SAMPLERS):
        refs += list(table.values())
    return refs


@pytest.mark.parametrize("ref", sorted(set(_refs())))
def test_every_entry_resolves_to_a_callable(ref: str) -> None:
    assert callable(families.resolve(ref)), ref


def test_denoisers_are_flow_denoisers() -> None:
    for family, ref in families.DENOISERS.items():
        assert issubclass(families.resolve(ref), FlowDenoiser), family


def test_entry_signatures_match_the_documented_ones() -> None:
    """A loader taking fewer parameters than the generic code passes would fail only when a user loads a file."""
    for _, load_ref in families.TRANSFORMER_FILES:
        assert len(inspect.signature(families.resolve(load_ref)).parameters) >= 5, load_ref
    for ref in families.CLIP_LOADERS.values():
        assert len(inspect.signature(families.resolve(ref)).parameters) >= 3, ref
    for ref in families.TEXT_ENCODERS.values():
        assert len(inspect.signature(families.resolve(ref)).parameters) >= 4, ref


def test_lookup_misses_are_none_and_unknown_headers_fall_through() -> None:
    from nodegraph.diffusion.detect import Header

    assert families.lookup(families.DENOISERS, "no-such-family") is None
    assert families.transformer_loader(Header(path=None, shapes={"weird.weight": (3, 3)}, metadata={})) is None
    assert families.vae_reader(["encoder.conv_in.weight", "decoder.conv_in.weight"]) is None
