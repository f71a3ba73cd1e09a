"""Which generation of the read model a reader reads.

The generation pointer (``<prefix>:meta:{<prefix>}:generation``) is a
deployment-wide key in the deployment's Redis Cluster slot, so no script can
read it together with a learning instance's keys. A reader resolves it first (cached for
:attr:`Generation.FRESH_S`) and then reads that generation's keys, all named
in ``KEYS[]``. That stays correct because:

- one read is one script (or one MULTI/EXEC) in one slot of one generation:
  it never mixes two generations or two moments;
- ``mastery rebuild --flush`` switches the pointer only once the new
  generation is complete, and then deletes the old one *sentinels first*
  (every LI's :meth:`~infra.read_model.keys.ReadModelKeys.learning_instance`
  and :meth:`~infra.read_model.keys.ReadModelKeys.member` keys, app/cli/rebuild.py)
  before any other key. Every read checks its sentinel in the same script, so
  it sees either the whole old slot or no sentinel; on no sentinel the reader
  asks :meth:`Generation.moved` and reads again in the new generation.

So a read right after a switch may come from the previous generation (as the
read would have a moment earlier), for at most ``FRESH_S`` or until that
generation is deleted, never half of one.
"""

from __future__ import annotations

import time
from typing import Any

from infra.read_model.keys import ReadModelKeys

__all__ = ["Generation"]


class Generation:
    """The current generation's keys, as one reader process sees them."""

    FRESH_S = 1.0

    def __init__(self, redis: Any, keys: ReadModelKeys | None = None) -> None:
        self._redis = redis
        self._base = ReadModelKeys((keys or ReadModelKeys()).prefix)
        self._keys: ReadModelKeys | None = None
        self._read_at = 0.0

    def fresh(self) -> ReadModelKeys | None:
        """The keys of the generation in use, if read within ``FRESH_S``."""
        keys = self._keys
        if keys is not None and time.monotonic() - self._read_at < self.FRESH_S:
            return keys
        return None

    async def current(self) -> ReadModelKeys:
        """The keys of the generation in use (read again when not fresh)."""
        return self.fresh() or await self._read()

    async def moved(self, seen: ReadModelKeys) -> ReadModelKeys | None:
        """After a read found no sentinel in ``seen``: the new generation's
        keys if the pointer moved, else ``None`` (the id is really unknown)."""
        keys = await self._read()
        return None if keys.generation == seen.generation else keys

    async def _read(self) -> ReadModelKeys:
        raw = await self._redis.get(self._base.current_generation())
        keys = self._base.in_generation(int(raw or 0))
        self._keys, self._read_at = keys, time.monotonic()
        return keys
