"""What an RDB file says about itself, read from its first bytes as it streams past.

The header carries the Redis version and the replication offset of the snapshot (aux
fields) and, for the database, the number of keys at the moment of the fork (the
RESIZEDB hint): exact values for the manifest without loading the file anywhere.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

OP_FUNCTION2 = 0xF5  # function libraries (Redis 7)
OP_FUNCTION = 0xF6  # the same, as 7.0 release candidates wrote it
OP_MODULE_AUX = 0xF7
OP_AUX = 0xFA
OP_RESIZEDB = 0xFB
OP_SELECTDB = 0xFE
OP_EOF = 0xFF
HEADER_LIMIT = 1 << 20  # the header sits in the first kilobytes; never buffer more


class NeedMore(Exception):
    """The bytes so far end inside the header."""


class RdbFormatError(ValueError):
    """Not an RDB file, or not one this parser understands."""


@dataclass
class RdbHeader:
    version: int
    aux: dict[str, str] = field(default_factory=dict)
    keys: int = 0
    expires: int = 0

    @property
    def redis_version(self) -> str | None:
        return self.aux.get("redis-ver")

    @property
    def repl_offset(self) -> int | None:
        value = self.aux.get("repl-offset")
        return int(value) if value is not None and value.lstrip("-").isdigit() else None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise NeedMore
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NeedMore
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def length(self) -> tuple[int, bool]:
        """(value, is_special_encoding) of an RDB length."""
        first = self.byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int(struct.unpack(">I", self.take(4))[0]), False
        if first == 0x81:
            return int(struct.unpack(">Q", self.take(8))[0]), False
        raise RdbFormatError(f"unknown length encoding 0x{first:02x}")

    def string(self) -> str | None:
        """A string field; None for an LZF-compressed value (not needed from the header)."""
        value, special = self.length()
        if not special:
            return self.take(value).decode("utf-8", errors="replace")
        if value == 0:
            return str(struct.unpack("<b", self.take(1))[0])
        if value == 1:
            return str(struct.unpack("<h", self.take(2))[0])
        if value == 2:
            return str(struct.unpack("<i", self.take(4))[0])
        if value == 3:
            compressed, _ = self.length()
            self.length()
            self.take(compressed)
            return None
        raise RdbFormatError(f"unknown string encoding {value}")


def parse_header(data: bytes) -> RdbHeader:
    """Parse the header from the first bytes of an RDB file.

    Raises NeedMore when `data` ends inside the header, RdbFormatError when it is not an
    RDB file.
    """
    if len(data) < 9:
        raise NeedMore
    if data[:5] != b"REDIS" or not data[5:9].isdigit():
        raise RdbFormatError("not an RDB file (no REDIS magic)")
    header = RdbHeader(version=int(data[5:9]))
    reader = _Reader(data)
    reader.pos = 9
    while True:
        opcode = reader.byte()
        if opcode == OP_AUX:
            key = reader.string()
            value = reader.string()
            if key is not None and value is not None:
                header.aux[key] = value
        elif opcode == OP_SELECTDB:
            db, _ = reader.length()
            if db != 0:
                return header  # cluster mode uses database 0 only
        elif opcode == OP_RESIZEDB:
            header.keys, _ = reader.length()
            header.expires, _ = reader.length()
            return header
        elif opcode == OP_EOF:
            return header  # an empty dataset
        elif opcode == OP_FUNCTION2:
            reader.string()  # a function library's code (redisops.functions): skipped
        elif opcode in (OP_FUNCTION, OP_MODULE_AUX):
            raise RdbFormatError("7.0-rc functions or module data in the RDB: not supported here")
        else:
            # Data without a RESIZEDB hint (older writers): the count stays unknown.
            header.keys = -1
            return header


class StreamInspector:
    """Fed the RDB as it streams: SHA-256 and size of everything, the header once seen."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.header: RdbHeader | None = None
        self._head = b""
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        if self.header is None and self.error is None:
            self._head += chunk
            try:
                self.header = parse_header(self._head)
                self._head = b""
            except NeedMore:
                if len(self._head) > HEADER_LIMIT:
                    self.error = "RDB header longer than 1 MiB"
                    self._head = b""
            except RdbFormatError as exc:
                self.error = str(exc)
                self._head = b""

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()
