"""The read model's Lua scripts. Each names every key it touches in ``KEYS[]``
(built by :mod:`infra.read_model.keys`; no key is spelled in Lua), all in one
learning instance's slot, so Redis Cluster can run them. The layouts of
``KEYS`` and ``ARGV`` are the builders' next to each script.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.read_model.keys import ReadModelKeys

__all__ = [
    "FEED_LUA",
    "HISTORY_LUA",
    "PAGE_LUA",
    "SWITCH_LUA",
    "VIEW_LUA",
    "history_keys",
    "page_keys",
    "view_keys",
]

#: The row feed (infra/read_model/writer.py), queued before the batch's SET of
#: the rows, so GET returns the row as it was before this batch: every row
#: whose JSON changes is appended to the learning instance's change stream.
#: KEYS[1] the change stream, KEYS[2..] row keys; ARGV[1] the stream's
#: MAXLEN, then (registration, goal, row) for each row key. Returns the
#: number of entries appended.
FEED_LUA = """
local added = 0
for i = 2, #KEYS do
  local j = 3 * (i - 2) + 2
  local row = ARGV[j + 2]
  if redis.call('GET', KEYS[i]) ~= row then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
               'r', ARGV[j], 'g', ARGV[j + 1], 'row', row)
    added = added + 1
  end
end
return added
"""

#: ``mastery rebuild --flush``'s switch: KEYS[1] the generation pointer; moves
#: it from ARGV[1] to ARGV[2] only if no other rebuild moved it meanwhile.
SWITCH_LUA = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def page_keys(
    keys: ReadModelKeys,
    li_id: str,
    goal_ids: Sequence[str],
    registration_id: str | None = None,
) -> list[str]:
    """KEYS of :data:`PAGE_LUA`: the LI's meta, instructors, learners, change
    stream, goal set, the registration's facts (its own page; else the LI's
    meta again), each goal's template, and on a registration's page its rows."""
    own = (
        keys.learning_instance(li_id)
        if registration_id is None
        else keys.member(li_id, registration_id)
    )
    out = [
        keys.learning_instance(li_id),
        keys.instructors(li_id),
        keys.learners(li_id),
        keys.changes(li_id),
        keys.goals(li_id),
        own,
    ]
    out += [keys.goal_template(li_id, g) for g in goal_ids]
    if registration_id is not None:
        out += [keys.row(li_id, registration_id, g) for g in goal_ids]
    return out


# KEYS: page_keys. ARGV: mode ('li' | 'reg'), offset, limit, caller, changes,
# held, expect, generation, the LI's or the registration's id, then the goal
# ids.
#
# Return: {-1} when the sentinel is missing (the LI in mode 'li', the
# registration's facts in mode 'reg'; infra/read_model/generation.py); else a
# head, the access facts {partner_id or '', caller is instructor 0/1,
# registration user or ''}, then either the goals that are not the LI's (head
# -2), {-4, facts} for an instructor's registration (only learners are rows),
# {-5, facts, version} when ARGV[6] (held: '' none, '*' any) is the page's
# version, or, with head = total:
#   {total, facts, version, last, resumed, li, generation, templates, ids, rows}
# `ids` are the page's registrations; `rows` (mode 'reg') their rows as stored
# with a missing one replaced by its goal's template. In mode 'li' the rows are
# never read here (their keys are known only after the ZRANGE): `rows` is 0
# and the caller reads them with an MGET in a MULTI/EXEC right after this
# script, passing in ARGV[7] (expect) the generation and the SHA-1 of the ids
# joined by ',' that it assumed. When they still hold, `ids` is 0 too: the
# MGET's reply is the page's rows, read in the same atomic step.
# ARGV[5] (changes) is '' for a page; for a live stream (api/stream.py) '-' (a
# snapshot) or the id of the last change the client has: `last` is then the
# LI's change-stream id at this instant and `resumed` 1 when the client can
# resume after its id without a gap (no rows are read then).
# A page's version is the SHA-1 of what its body is made of besides the
# request: the generation, the change stream's last id (every changed row
# appends to it in its own transaction), the learner count and the templates.
PAGE_LUA = """
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end
-- The change stream's last id, and 1 when every entry after `after` (an id,
-- or '-' for a snapshot) is still in the stream: none was trimmed.
local function stream_position(key, after)
  if redis.call('EXISTS', key) == 0 then
    return '0-0', after ~= '-' and 1 or 0
  end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
  local last = f['last-generated-id']
  if after == '-' then return last, 0 end
  if f['entries-added'] == f['length'] then return last, 1 end
  local first = f['first-entry']
  if first and id_le(first[1], after) then return last, 1 end
  return last, 0
end
local mode, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local caller, changes, held, expect, gen = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local goals = {}
for i = 10, #ARGV do goals[#goals + 1] = ARGV[i] end
local ng = #goals
local reg_user, reg_role = '', 'learner'
if mode == 'reg' then
  local meta = redis.call('GET', KEYS[6])
  if not meta then return {-1} end
  local m = cjson.decode(meta)
  reg_user = m['user_id']
  reg_role = m['role'] or 'learner'
end
local li_meta = redis.call('GET', KEYS[1])
if mode == 'li' and not li_meta then return {-1} end
local partner = ''
if li_meta then partner = cjson.decode(li_meta)['partner_id'] end
local instructor = 0
if caller ~= '' then instructor = redis.call('SISMEMBER', KEYS[2], caller) end
local bad = {-2, partner, instructor, reg_user}
local templates = {}
for i, g in ipairs(goals) do
  if redis.call('SISMEMBER', KEYS[5], g) == 0 then bad[#bad + 1] = g end
  templates[i] = redis.call('GET', KEYS[6 + i])
end
if #bad > 4 then return bad end
if reg_role ~= 'learner' then return {-4, partner, instructor, reg_user} end
local last, resumed = '0-0', 0
if changes ~= '' then last, resumed = stream_position(KEYS[4], changes) end
local total = 1
if mode == 'li' then total = redis.call('ZCARD', KEYS[3]) end
local version
if changes == '' then
  local newest = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  local parts = {gen, newest[1] and newest[1][1] or '0-0', tostring(total)}
  for i = 1, ng do parts[#parts + 1] = templates[i] or '' end
  version = redis.sha1hex(table.concat(parts, '\\n'))
  if held == '*' or held == version then
    return {-5, partner, instructor, reg_user, version}
  end
end
local regs = {}
if resumed == 0 then
  if mode == 'li' then
    regs = redis.call('ZRANGE', KEYS[3], offset, offset + limit - 1)
  else
    regs = {ARGV[9]}
  end
end
local fallback = {}
for i = 1, ng do fallback[i] = templates[i] or '{}' end
local head = {total, partner, instructor, reg_user, version or '', last, resumed,
              ARGV[9], gen, fallback, regs, 0}
if mode == 'li' then
  local ids = redis.sha1hex(table.concat(regs, ','))
  if expect ~= '' and expect == gen .. ':' .. ids then
    head[11] = 0
  end
  return head
end
local rows = {}
if resumed == 0 and ng > 0 then
  rows = redis.call('MGET', unpack(KEYS, 7 + ng, 6 + 2 * ng))
  for k = 1, #rows do
    if not rows[k] then rows[k] = fallback[k] end
  end
end
head[12] = rows
return head
"""


def history_keys(
    keys: ReadModelKeys, li_id: str, registration_id: str, goal_id: str
) -> list[str]:
    """KEYS of :data:`HISTORY_LUA`: the registration's facts, its timeline."""
    return [
        keys.member(li_id, registration_id),
        keys.history(li_id, registration_id, goal_id),
    ]


#: {-1} when the registration's facts (the sentinel) are missing, else {1,
#: the timeline or nil}.
HISTORY_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
return {1, redis.call('GET', KEYS[2])}
"""


def view_keys(keys: ReadModelKeys, li_id: str) -> list[str]:
    """KEYS of :data:`VIEW_LUA`."""
    return [
        keys.learning_instance(li_id),
        keys.instructors(li_id),
        keys.learner_registrations(li_id),
        keys.goals(li_id),
        keys.goal_names(li_id),
        keys.learner_names(li_id),
    ]


#: The dashboard's view of a learning instance (api/dashboard.py). KEYS:
#: view_keys; ARGV[1] the caller. {} when the LI is unknown; else {partner_id,
#: caller is instructor 0/1, caller's learner registration or '', the LI's
#: title or '', number of goals, (goal id, its names' JSON or '')...,
#: (learner registration id, display name)...}.
VIEW_LUA = """
local meta = redis.call('GET', KEYS[1])
if not meta then return {} end
local caller = ARGV[1]
local instructor, own = 0, false
if caller ~= '' then
  instructor = redis.call('SISMEMBER', KEYS[2], caller)
  own = redis.call('HGET', KEYS[3], caller)
end
local facts = cjson.decode(meta)
local goals = redis.call('SMEMBERS', KEYS[4])
local out = {facts['partner_id'], instructor, own or '', facts['title'] or '', #goals}
for _, g in ipairs(goals) do
  out[#out + 1] = g
  out[#out + 1] = redis.call('HGET', KEYS[5], g) or ''
end
for _, v in ipairs(redis.call('HGETALL', KEYS[6])) do
  out[#out + 1] = v
end
return out
"""
