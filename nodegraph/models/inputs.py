"""``ModelCombo``: a COMBO of the models in one folder of the table, whose refusal says why a file is not offered.

The options are what ``folders.list_models`` lists (pickle files only with ``allow_unsafe_pickle``), so a workflow
naming ``old.ckpt`` fails validation; instead of only "not among the options", the error then says that the file is
a pickle and how to load it (convert it, or start with ``--allow-unsafe-pickle``), or that its extension is not one
the folder takes.
"""

from __future__ import annotations

from typing import Any, Sequence

from nodegraph.inputs import ComboInput, ConstantError, OptionsProvider


class ModelComboInput(ComboInput):
    """A COMBO of model names in the models sub-folder ``folder``."""

    folder: str = ""

    def coerce(self, value: Any, config: Any = None) -> Any:
        try:
            return super().coerce(value, config)
        except ConstantError as exc:
            reason = _why_unlisted(config, self.folder, value)
            if reason is None:
                raise
            raise ConstantError(exc.kind, f"{value!r} is not among the options: {reason}", exc.details) from None


def _why_unlisted(config: Any, folder: str, value: Any) -> str | None:
    """Why an existing file ``value`` in ``folder`` is not listed (pickle, wrong extension); None if it is absent."""
    if config is None or not folder or not isinstance(value, str) or not value:
        return None
    from nodegraph.diffusion.loading import resolve_model

    from .folders import UnlistedModelError, check_listed

    try:
        path = resolve_model(config, folder, value)
        check_listed(path, folder, config)
    except UnlistedModelError as exc:
        return str(exc)
    except (OSError, ValueError):  # missing, unsafe path, unknown folder: the plain "choose one of" says enough
        return None
    return None


def ModelCombo(folder: str, choices: Sequence[str] | OptionsProvider, *, default: str | None = None,
               optional: bool = False, tooltip: str | None = None) -> ModelComboInput:
    """A COMBO of the models in ``models/<folder>`` (``choices``: e.g. ``checkpoint_names``) with clear refusals."""
    return ModelComboInput(choices=choices if callable(choices) else tuple(choices), default=default,
                           optional=optional, tooltip=tooltip, folder=folder)


__all__ = ["ModelCombo", "ModelComboInput"]
