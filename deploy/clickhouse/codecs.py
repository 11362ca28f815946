"""HTTP body codecs: request Content-Encoding in, response compression out."""

from __future__ import annotations

import gzip
import zlib

from deploy.clickhouse.errors import (
    CANNOT_DECOMPRESS,
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    ServerError,
)

# In the order the server prefers them when a client accepts several.
RESPONSE_ENCODINGS: tuple[str, ...] = ("lz4", "zstd", "gzip", "deflate", "br")


def decode_body(body: bytes, encoding: str, *, max_size_bytes: int) -> bytes:
    """Decompress a request body; concatenated frames (one per insert block) are read whole.

    Raises:
        ServerError: 271 for corrupt data, 48 for an unknown encoding, 229 when the
            decompressed body exceeds `max_size_bytes`.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            out = gzip.decompress(body)
        elif encoding == "deflate":
            out = zlib.decompress(body)
        elif encoding == "zstd":
            out = _zstd_frames(body, max_size_bytes)
        elif encoding == "lz4":
            out = _lz4_frames(body, max_size_bytes)
        elif encoding == "br":
            import brotli

            out = brotli.decompress(body)
        else:
            raise ServerError(NOT_IMPLEMENTED, f"Unknown Content-Encoding {encoding!r}; use gzip, "
                              "deflate, zstd, lz4 or br")
    except ServerError:
        raise
    except Exception as e:
        raise ServerError(CANNOT_DECOMPRESS, f"Cannot decompress the {encoding} body: {e}") from e
    if len(out) > max_size_bytes:
        raise ServerError(QUERY_IS_TOO_LARGE, f"Decompressed body of {len(out)} bytes exceeds "
                          f"max_body_size_bytes={max_size_bytes}", http_status=413)
    return out


def _zstd_frames(body: bytes, max_size_bytes: int) -> bytes:
    import zstandard

    out = bytearray()
    view = memoryview(body)
    while view:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        out += decompressor.decompress(view)
        view = memoryview(decompressor.unused_data)
        if len(out) > max_size_bytes:
            break
    return bytes(out)


def _lz4_frames(body: bytes, max_size_bytes: int) -> bytes:
    import lz4.frame

    out = bytearray()
    rest = body
    while rest:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        out += decompressor.decompress(rest)
        if not decompressor.eof:
            raise ValueError("truncated lz4 frame")
        rest = decompressor.unused_data
        if len(out) > max_size_bytes:
            break
    return bytes(out)


def choose_encoding(accept_encoding: str) -> str | None:
    """The response encoding for an Accept-Encoding header, or None for identity."""
    offered = [part.split(";")[0].strip().lower() for part in accept_encoding.split(",")]
    for encoding in offered:
        if encoding in RESPONSE_ENCODINGS and _available(encoding):
            return encoding
    return None


def _available(encoding: str) -> bool:
    if encoding != "br":
        return True
    try:
        import brotli  # noqa: F401
    except ImportError:
        return False
    return True


def encode_body(body: bytes, encoding: str, *, level: int | None = None) -> bytes:
    """Compress a response body with an encoding `choose_encoding` picked."""
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=level or 3)
    if encoding == "deflate":
        return zlib.compress(body, level or 3)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=level or 3).compress(body)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.compress(body)
    if encoding == "br":
        import brotli

        return brotli.compress(body, quality=level or 4)
    return body


