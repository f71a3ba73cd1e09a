"""The row feed: what a projection adds to its MULTI/EXEC for live dashboards.

For every row of the batch whose stored JSON changes, an entry is appended to
the row's learning-instance change stream (``ms:li:{li}:changes``, ``XADD
MAXLEN ~`` :data:`schemas.read_model.CHANGES_MAXLEN`). Because the append is in
the same transaction as the row's ``SET``, a reader that takes a snapshot of
the rows together with the stream's last id (one Lua call, ``api/store.py``)
and then reads the stream after that id misses nothing and sees nothing twice;
the stream ids double as SSE event ids for ``Last-Event-ID`` resume
(docs/dashboard.md).

Rows whose JSON is unchanged (a redelivered batch, the repair pass after a
rebalance) append nothing, so replays do not flood the dashboards.

It also keeps two small indexes the dashboard needs: the goals of each learning
instance and each learner's registration in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from schemas.read_model import CHANGES_MAXLEN, ReadModelKeys

__all__ = ["add_to_pipeline"]

# ARGV: the generation's namespace, the prefix, maxlen, number of (goal, li)
# pairs known from this batch, the pairs, then (row key, registration, goal,
# row) quadruples. Runs before the
# batch's MSET, so GET returns the row as it was before this batch. Returns the
# number of entries appended. The stream key is built as in
# ReadModelKeys.changes (tested in tests/unit/test_row_feed.py).
_FEED_LUA = """
local p = ARGV[1]
local prefix = ARGV[2]
local maxlen = ARGV[3]
local owners = {}
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  owners[ARGV[i]] = ARGV[i + 1]
  i = i + 2
end
local added = 0
while i <= #ARGV do
  local key, reg, goal, row = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('GET', key) ~= row then
    local li = owners[goal]
    if li == nil then
      li = redis.call('GET', p .. ':goal:' .. goal) or false
      owners[goal] = li
    end
    if li then
      redis.call('XADD', prefix .. ':changes:' .. li, 'MAXLEN', '~', maxlen,
                 '*', 'r', reg, 'g', goal, 'row', row)
      added = added + 1
    end
  end
end
return added
"""


def add_to_pipeline(
    pipe: Any, keys: ReadModelKeys, strings: Mapping[str, bytes]
) -> None:
    """Queue the feed's commands on ``pipe`` (a MULTI/EXEC pipeline), before
    the projection's own ``MSET`` of ``strings``."""
    owners: list[str | bytes] = []
    rows: list[str | bytes] = []
    for key, value in strings.items():
        parsed = keys.parse_row(key)
        if parsed is not None:
            rows += [key, parsed[0], parsed[1], value]
            continue
        goal = keys.parse_goal(key)
        if goal is not None:
            li = value.decode()
            owners += [goal, li]
            pipe.sadd(keys.goals(li), goal)
            continue
        reg = keys.parse_registration(key)
        if reg is not None:
            facts = orjson.loads(value)
            if facts.get("role") == "learner":
                li = facts["learning_instance_id"]
                pipe.hset(keys.learner_registrations(li), facts["user_id"], reg)
                name = facts.get("display_name")
                if name is None:
                    pipe.hdel(keys.learner_names(li), reg)
                else:
                    pipe.hset(keys.learner_names(li), reg, name)
    if rows:
        pipe.eval(
            _FEED_LUA,
            0,
            keys.namespace,
            keys.prefix,
            CHANGES_MAXLEN,
            len(owners) // 2,
            *owners,
            *rows,
        )
