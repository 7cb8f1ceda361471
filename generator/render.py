"""One entry point for rendering, whichever DHCP server the file is for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from generator import errors, model, render_isc, render_kea, render_options

Format = Literal["isc", "kea"]
FORMATS: tuple[Format, ...] = get_args(Format)


@dataclass(frozen=True, kw_only=True)
class Document:
    """A rendered file, and for ISC its parts (see ``render_isc.Parts``)."""

    fmt: Format
    text: str
    parts: render_isc.Parts | None = None


def render(
    inventory: model.Inventory,
    *,
    fmt: Format,
    options: render_options.RenderOptions | None = None,
) -> str:
    """Return the config text for ``inventory`` (already through ``validate.check``)."""
    return document(inventory, fmt=fmt, options=options).text


def document(
    inventory: model.Inventory,
    *,
    fmt: Format,
    options: render_options.RenderOptions | None = None,
) -> Document:
    """Render ``inventory`` (already through ``validate.check``)."""
    options = options or render_options.RenderOptions()
    if fmt == "isc":
        parts = render_isc.render_parts(inventory, options=options)
        return Document(fmt=fmt, text=parts.preamble + "".join(parts.hosts), parts=parts)
    if fmt == "kea":
        return Document(fmt=fmt, text=render_kea.render(inventory, options=options))
    raise errors.InvalidOptions(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
