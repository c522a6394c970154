"""What a fresh server holds, as upstream's ``--reset`` makes it."""

from __future__ import annotations

import struct
import zlib

__all__ = ["SEED_DESCRIPTION", "SEED_NAME", "seed_icon_png"]

SEED_NAME = "My Concord Server"
SEED_DESCRIPTION = "This is my Concord server. Edit this description to say something cool!"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def seed_icon_png(size: int = 64) -> bytes:
    """A ``size`` x ``size`` RGB PNG: a light disc on Concord blue.

    Made here with zlib rather than shipped as a file: it is a few lines and
    needs no image library.
    """
    centre, radius = (size - 1) / 2, size * 0.3
    rows = []
    for y in range(size):
        row = bytearray(b"\x00")  # filter type 0 for the row
        for x in range(size):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius**2
            row += b"\xee\xf2\xff" if inside else b"\x3b\x5b\xdb"
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )
