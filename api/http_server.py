"""The HTTP server's request-head limits: ``431`` before a huge head is read,
``408`` for a head that takes too long.

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

uvicorn has no time limit on a request head either (its keep-alive timeout
ends when any byte arrives), so a client that sends a head a byte at a time
(slowloris) holds a connection for ever. The protocol starts a timer when a
connection opens and when a request's first byte arrives; if the head is not
complete when it fires, the server answers ``408 Request Timeout`` and closes.
:func:`http_protocol` makes the class with a given timeout
(``MASTERY_API_HEAD_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = [
    "DEFAULT_HEAD_TIMEOUT_S",
    "DEFAULT_MAX_HEAD_BYTES",
    "HeadLimitedHttpToolsProtocol",
    "http_protocol",
]

#: uvicorn's (h11's) default, used when the config sets no limit.
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
DEFAULT_HEAD_TIMEOUT_S = 10.0

_MESSAGE = b"request line and headers too large"
_TIMEOUT_MESSAGE = b"request head not received in time"


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops and uvicorn answers
    through :meth:`HeadLimitedHttpToolsProtocol.send_400_response`."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request head's size
    and on the time it takes to arrive."""

    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S

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
        self._head_timer: asyncio.TimerHandle | None = None

    # The ignore: uvicorn's own override narrows BaseTransport the same way.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.head_timeout_s, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._answer(408, _TIMEOUT_MESSAGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._start_head_timer()

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
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Idle until the next request: uvicorn's keep-alive timeout applies,
        # and the head timer starts again with the next request's first byte.
        self._cancel_head_timer()
        super().on_response_complete()

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
        self._answer(431, _MESSAGE)

    def _answer(self, status: int, message: bytes) -> None:
        self._cancel_head_timer()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(message)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    message,
                ]
            )
        )
        self.transport.close()


def http_protocol(head_timeout_s: float) -> type[HeadLimitedHttpToolsProtocol]:
    """The protocol class uvicorn is given, with this head timeout."""
    return type(
        "HeadLimitedHttpToolsProtocol",
        (HeadLimitedHttpToolsProtocol,),
        {"head_timeout_s": head_timeout_s},
    )
