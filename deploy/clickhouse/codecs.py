"""HTTP body codecs: request Content-Encoding in, response compression out."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterator

from deploy.clickhouse.errors import (
    CANNOT_DECOMPRESS,
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    ServerError,
)

# In the order the server prefers them when a client accepts several.
RESPONSE_ENCODINGS: tuple[str, ...] = ("lz4", "zstd", "gzip", "deflate", "br")


_PIECE_BYTES = 1 << 20


def decode_body(body: bytes, encoding: str, *, max_size_bytes: int) -> bytes:
    """Decompress a whole request body (see `iter_decoded`)."""
    return b"".join(iter_decoded(body, encoding, max_size_bytes=max_size_bytes))


def iter_decoded(body: bytes, encoding: str, *, max_size_bytes: int,
                 piece_bytes: int = _PIECE_BYTES) -> Iterator[bytes]:
    """Decompress a request body in pieces of at most `piece_bytes`, counting against the cap.

    The cap counts inflated bytes, and no piece is inflated past it: a small
    compressed body that would inflate to gigabytes (a "zip bomb") is refused after
    `max_size_bytes` of output, with at most one piece in memory beyond what the
    caller keeps. Concatenated frames (one per insert block) are read whole.

    Raises:
        ServerError: 271 for corrupt data, 48 for an unknown encoding, 229 when the
            decompressed body exceeds `max_size_bytes`.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        yield body
        return
    pieces = _DECODERS.get(encoding)
    if pieces is None:
        raise ServerError(NOT_IMPLEMENTED, f"Unknown Content-Encoding {encoding[:40]!r}; use "
                          "one of gzip, deflate, zstd, lz4 or br", http_status=415)
    total = 0
    try:
        for piece in pieces(body, piece_bytes):
            total += len(piece)
            if total > max_size_bytes:
                raise ServerError(QUERY_IS_TOO_LARGE, f"The decompressed body exceeds "
                                  f"max_body_size_bytes={max_size_bytes}; send smaller batches "
                                  "or raise clickhouse.max_body_size_bytes", http_status=413)
            if piece:
                yield piece
    except ServerError:
        raise
    except Exception as e:
        raise ServerError(CANNOT_DECOMPRESS, f"Cannot decompress the {encoding} body: {e}") from e


def _zlib_pieces(wbits: int) -> Callable[[bytes, int], Iterator[bytes]]:
    def pieces(body: bytes, size: int) -> Iterator[bytes]:
        rest = body
        while rest:
            d = zlib.decompressobj(wbits)
            data = rest
            while not d.eof:
                piece = d.decompress(data, size)
                yield piece
                data = d.unconsumed_tail
                if not piece and not data:
                    raise ValueError("truncated stream")
            rest = d.unused_data
    return pieces


def _zstd_pieces(body: bytes, size: int) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    while piece := reader.read(size):
        yield piece


def _lz4_pieces(body: bytes, size: int) -> Iterator[bytes]:
    import lz4.frame

    rest = body
    while rest:
        d = lz4.frame.LZ4FrameDecompressor()
        data = rest
        while not d.eof:
            piece = d.decompress(data, max_length=size)
            yield piece
            data = b""
            if not piece and d.needs_input:
                raise ValueError("truncated lz4 frame")
        rest = d.unused_data


def _brotli_pieces(body: bytes, size: int) -> Iterator[bytes]:
    import brotli

    d = brotli.Decompressor()
    data = body
    while not d.is_finished():
        piece = d.process(data, output_buffer_limit=size)
        yield piece
        data = b""
        if not piece and d.can_accept_more_data():
            raise ValueError("truncated brotli stream")


_DECODERS: dict[str, Callable[[bytes, int], Iterator[bytes]]] = {
    "gzip": _zlib_pieces(31), "x-gzip": _zlib_pieces(31), "deflate": _zlib_pieces(15),
    "zstd": _zstd_pieces, "lz4": _lz4_pieces, "br": _brotli_pieces,
}


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


