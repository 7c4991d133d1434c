"""The cluster DNS's answer for names that do not exist: NXDOMAIN, at once.

The engine's resolver answers the pods' names (container aliases) itself and forwards
every other query upstream; here no upstream answers, so each unknown name costs a
resolver timeout (5 s per try), where CoreDNS answers NXDOMAIN immediately (a search-list
expansion under ndots:5, a deleted pod's record). This responder listens on the pod
network's gateway and is given to the pods as their upstream server, so the pods see what
they see on GKE: their names resolve, the rest fail fast.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

NXDOMAIN = 3


def nxdomain_reply(query: bytes) -> bytes | None:
    """The reply to a DNS query: same id and question, QR and RA set, RCODE NXDOMAIN."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:  # a response, not a query
        return None
    end = 12
    for _ in range(qdcount):  # the question section: labels, then type and class
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        end += 5
    if end > len(query):
        return None
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | NXDOMAIN  # QR, opcode+RD, RA
    return struct.pack("!HHHHHH", ident, reply_flags, qdcount, 0, 0, 0) + query[12:end]


class NxdomainServer:
    """A UDP responder on (address, 53) in a daemon thread; `close()` stops it."""

    def __init__(self, address: str, port: int = 53) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.address = address
        self.answered = 0
        self._thread = threading.Thread(target=self._serve, name="nxdomain", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = nxdomain_reply(query)
            if reply is not None:
                self.answered += 1
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        # shutdown wakes the thread blocked in recvfrom; close then releases the port
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)
