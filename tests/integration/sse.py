"""A small Server-Sent Events client for the tests (httpx streaming)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

__all__ = ["Event", "SseStream"]


@dataclass(frozen=True)
class Event:
    event: str
    id: str | None
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


class SseStream:
    """Parses ``text/event-stream`` lines into events; comment lines
    (heartbeats) are counted and yielded as events named ``:``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments = 0
        self._lines = response.iter_lines()

    def events(self) -> Iterator[Event]:
        fields: dict[str, list[str]] = {}
        for line in self._lines:
            if not line:
                if "data" in fields or "event" in fields:
                    yield Event(
                        fields.get("event", ["message"])[-1],
                        fields["id"][-1] if "id" in fields else None,
                        "\n".join(fields.get("data", [])).encode(),
                    )
                fields = {}
                continue
            if line.startswith(":"):
                self.comments += 1
                yield Event(":", None, line[1:].strip().encode())  # a heartbeat
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))

    def next(self, event: str | None = None) -> Event:
        """The next event (of that type, skipping others)."""
        for ev in self.events():
            if ev.event != ":" and (event is None or ev.event == event):
                return ev
        raise EOFError("the stream ended")
