"""ClickHouse's own compressed block format, for `compress=1` and `decompress=1` over HTTP.

Each block is a 16-byte CityHash128 checksum (ClickHouse's CityHash 1.0.2, from
`clickhouse-cityhash`, the package clickhouse-driver uses) of what follows it, then
a method byte (0x02 none, 0x82 LZ4, 0x90 ZSTD), the block's size with its 9-byte
header and the decompressed size, both little-endian UInt32, then the payload.
This is the layout of MergeTree's .bin files too, which is how the tests check it
against the engine itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from deploy.clickhouse.errors import CANNOT_DECOMPRESS, QUERY_IS_TOO_LARGE, ServerError

NONE, LZ4, ZSTD = 0x02, 0x82, 0x90
CHECKSUM_DOESNT_MATCH = 40
_HEADER = struct.Struct("<BII")
_BLOCK_BYTES = 1 << 20
_MASK = (1 << 64) - 1


def _checksum(data: bytes) -> bytes:
    from clickhouse_cityhash.cityhash import CityHash128

    value = CityHash128(data)
    return struct.pack("<QQ", value >> 64, value & _MASK)


def compress_blocks(data: bytes, *, method: int = LZ4) -> bytes:
    """`data` as compressed blocks of at most 1 MiB each."""
    import lz4.block

    out = bytearray()
    for start in range(0, len(data), _BLOCK_BYTES):
        piece = data[start:start + _BLOCK_BYTES]
        if method == LZ4:
            payload = lz4.block.compress(piece, store_size=False)
        elif method == ZSTD:
            import zstandard

            payload = zstandard.ZstdCompressor(level=1).compress(piece)
        else:
            payload = piece
        body = _HEADER.pack(method, _HEADER.size + len(payload), len(piece)) + payload
        out += _checksum(body) + body
    return bytes(out)


def iter_decompressed(data: bytes, *, max_size_bytes: int) -> Iterator[bytes]:
    """The blocks of `data`, checked and decompressed, in order.

    Raises:
        ServerError: 40 for a block whose checksum does not match, 271 for a
            truncated or unknown block, 229 past `max_size_bytes` decompressed.
    """
    import lz4.block

    view = memoryview(data)
    at = total = 0
    while at < len(view):
        if len(view) - at < 16 + _HEADER.size:
            raise ServerError(CANNOT_DECOMPRESS, "Truncated compressed block header")
        method, size, raw_size = _HEADER.unpack_from(view, at + 16)
        if size < _HEADER.size or at + 16 + size > len(view):
            raise ServerError(CANNOT_DECOMPRESS, f"Compressed block of {size} bytes is truncated")
        body = bytes(view[at + 16:at + 16 + size])
        if _checksum(body) != bytes(view[at:at + 16]):
            raise ServerError(CHECKSUM_DOESNT_MATCH, "Checksum doesn't match: corrupted data",
                              name="CHECKSUM_DOESNT_MATCH", http_status=400)
        total += raw_size
        if total > max_size_bytes:
            raise ServerError(QUERY_IS_TOO_LARGE, f"The decompressed body exceeds "
                              f"max_body_size_bytes={max_size_bytes}", http_status=413)
        payload = body[_HEADER.size:]
        try:
            if method == LZ4:
                piece = lz4.block.decompress(payload, uncompressed_size=raw_size)
            elif method == ZSTD:
                import zstandard

                piece = zstandard.ZstdDecompressor().decompress(payload,
                                                                max_output_size=raw_size)
            elif method == NONE:
                piece = payload
            else:
                raise ServerError(CANNOT_DECOMPRESS, f"Unknown compression method 0x{method:02x}")
        except ServerError:
            raise
        except Exception as e:
            raise ServerError(CANNOT_DECOMPRESS, f"Cannot decompress a block: {e}") from e
        if len(piece) != raw_size:
            raise ServerError(CANNOT_DECOMPRESS, "A block decompressed to the wrong size")
        yield piece
        at += 16 + size
