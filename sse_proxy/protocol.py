"""uvicorn's httptools protocol with a bound on the request head.

httptools accepts request heads of any size (a 2 MB header was accepted in testing), so
a client could make the process buffer as much as it sends. Past `MAX_HEAD_BYTES` the
request is answered 431 and the connection closed, before the head is parsed further.

Where the head ends is the parser's call (`on_headers_complete`), not a search for the
blank line in each read: that line can arrive split across two reads. While a head is
being read, the parser is fed no more than the bytes the bound still allows.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        while self._in_head and data:
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return  # the parser refused the request (400) and closed the connection
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What follows on this connection is the next request's head. (Pipelined bytes
        # in the rest of the same read are not counted: one read is bounded anyway.)
        self._in_head, self._head_bytes = True, 0

    def _refuse(self) -> None:
        body = json.dumps(
            {
                "error": "request_header_fields_too_large",
                "reason": "head_too_large",
                "detail": f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
            }
        ).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self._in_head = False
        self.transport.write(head + body)
        self.transport.close()
