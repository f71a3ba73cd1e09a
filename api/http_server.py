"""The HTTP server's request-head limit: ``431`` before a huge head is read.

uvicorn's httptools protocol buffers a request line and headers of any size
(llhttp has no limit of its own; h11's ``max_incomplete_event_size`` exists but
is answered with a generic ``400``). :class:`HeadLimitedHttpToolsProtocol`
adds up the request line and headers as the parser reports them, and the raw
bytes received while a head is incomplete (httptools reports a header only
once its value is complete); once either exceeds
``Config.h11_max_incomplete_event_size`` (uvicorn's own name for this limit,
set from ``MASTERY_API_MAX_HEADER_BYTES``) it answers ``431 Request Header
Fields Too Large`` and closes the connection. At most the limit plus one
socket read is ever buffered, and the app never sees the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["DEFAULT_MAX_HEAD_BYTES", "HeadLimitedHttpToolsProtocol"]

#: uvicorn's (h11's) default, used when the config sets no limit.
DEFAULT_MAX_HEAD_BYTES = 16 * 1024

_MESSAGE = b"request line and headers too large"


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops and uvicorn answers
    through :meth:`HeadLimitedHttpToolsProtocol.send_400_response`."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on the request head's size."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = True
        self._head_bytes = 0  # raw bytes received while the head is incomplete
        self._head_size = 0  # request line and headers as parsed
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._max_head:
            self._refused = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this read: the head alone is this large.
        if self._in_head and self._head_bytes > self._max_head and not self._refused:
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(_MESSAGE)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    _MESSAGE,
                ]
            )
        )
        self.transport.close()
