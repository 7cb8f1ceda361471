"""One entry point for rendering, whichever DHCP server the file is for."""

from __future__ import annotations

from typing import Literal, get_args

from generator import errors, model, render_isc, render_kea, render_options

Format = Literal["isc", "kea"]
FORMATS: tuple[Format, ...] = get_args(Format)


def render(
    inventory: model.Inventory,
    *,
    fmt: Format,
    options: render_options.RenderOptions | None = None,
) -> str:
    """Return the config text for ``inventory`` (already through ``validate.check``)."""
    options = options or render_options.RenderOptions()
    if fmt == "isc":
        return render_isc.render(inventory, options=options)
    if fmt == "kea":
        return render_kea.render(inventory, options=options)
    raise errors.InvalidOptions(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
