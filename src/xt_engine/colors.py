"""Class colours: from a head config when it names them, else a fixed palette (0 transparent)."""

from __future__ import annotations

from xt_engine.config import HeadConfig

_PALETTE = (
    "#00000000",
    "#e6194b",
    "#3cb44b",
    "#0082c8",
    "#f58230",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#d2f53c",
    "#fabebe",
)


def parse_color(color: str) -> list[int]:
    """``'#rrggbb'`` or ``'#rrggbbaa'`` -> ``[r, g, b, a]`` in 0..255."""
    text = color.lstrip("#")
    if len(text) not in (6, 8):
        raise ValueError(f"colour {color!r} is not #rrggbb or #rrggbbaa")
    values = [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    return values + [255] * (4 - len(values))


def class_colors(head: HeadConfig) -> list[list[int]]:
    """One RGBA (0..255) colour per class; class 0 of a default palette is transparent."""
    if head.class_colors is not None:
        return [parse_color(c) for c in head.class_colors]
    return [
        parse_color(_PALETTE[i % len(_PALETTE)]) if i else [0, 0, 0, 0]
        for i in range(head.num_classes)
    ]
