"""How many SMS parts a text costs: GSM 03.38 (7-bit) when every character fits, UCS-2 otherwise.

One part holds 160 GSM characters or 70 UCS-2 code units; a multipart text carries a header, leaving 153 / 67 per
part. An extension-table character (€, [, ], {, }, ~, ^, |, \\, form feed) takes two GSM positions, and neither it
nor a surrogate pair is split across parts, as providers do.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
SINGLE = {"GSM-7": 160, "UCS-2": 70}
MULTI = {"GSM-7": 153, "UCS-2": 67}


@dataclass(frozen=True)
class Segments:
    """A text's encoding, its length in that encoding's units, and the number of parts."""

    encoding: str  # "GSM-7" | "UCS-2"
    units: int
    parts: int

    @property
    def per_part(self) -> int:
        """Units that fit in one part at this length."""
        return SINGLE[self.encoding] if self.parts <= 1 else MULTI[self.encoding]


def _widths(text: str) -> tuple[str, list[int]]:
    """The encoding and each character's width in it."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        return "GSM-7", [2 if ch in GSM_EXTENSION else 1 for ch in text]
    return "UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def count_segments(text: str) -> Segments:
    """The parts a text needs."""
    encoding, widths = _widths(text)
    units = sum(widths)
    if units <= SINGLE[encoding]:
        return Segments(encoding, units, 1 if units else 0)
    parts, room = 1, MULTI[encoding]
    for width in widths:
        if width > room:  # a two-unit character never straddles two parts
            parts, room = parts + 1, MULTI[encoding]
        room -= width
    return Segments(encoding, units, parts)
