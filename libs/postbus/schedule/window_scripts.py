"""The Lua scripts behind :mod:`postbus.schedule.windows`: each change to a
destination's window is one of them, atomic and one round trip to Redis.
Their keys and arguments are listed above each; the Python side builds them."""

# KEYS: hash, busy, leases, waiting, tickets. ARGV: member, lease, initial, limit, rate, ttl,
# dest id, the ticket to take when refused ('' for none: "agent\nmember").
ACQUIRE_FN = """
local function acquire(KEYS, ARGV)
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local h, busy = KEYS[1], KEYS[2]
local member, lease = ARGV[1], tonumber(ARGV[2])
local initial, limit, rate = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', h, 'window', 'dead_until', 'dsn', 'reason', 'next_start')
local window = tonumber(s[1]) or initial
local dead = tonumber(s[2]) or 0
if dead > 0 then
  if dead > now then return {'dead', s[3] or '4.0.0', s[4] or 'unknown error', '0', '0'} end
  local n = redis.call('ZCARD', busy)
  if n > 0 then window = n else window = initial end
  redis.call('HSET', h, 'window', window, 'dead_until', 0, 'success', 0, 'failure', 0,
             'fail_cohorts', 0)
  redis.call('HDEL', h, 'dsn', 'reason')
end
local function take()
  redis.call('ZADD', busy, now + lease, member)
  redis.call('ZADD', KEYS[3], now + lease, ARGV[7] .. '\\n' .. member)
  redis.call('EXPIRE', h, ARGV[6]); redis.call('EXPIRE', busy, ARGV[6])
  return {'go', '', '', '0', '0'}
end
if redis.call('ZSCORE', busy, member) then return take() end
if rate > 0 then window = 1 end
if limit > 0 and window > limit then window = limit end
if window < 1 then window = 1 end
local queued = tostring(redis.call('SISMEMBER', KEYS[4], ARGV[7]))
if redis.call('ZCARD', busy) >= window then
  -- no parked job goes first: the job waits for a slot, in the tickets' order (see grant)
  if ARGV[8] ~= '' and queued == '0' then
    redis.call('ZADD', KEYS[5], 'NX', now, ARGV[8]); redis.call('EXPIRE', KEYS[5], 60)
  end
  return {'wait', '', '', '0', queued}
end
if rate > 0 then
  local after = tonumber(s[5]) or 0
  if after > now then return {'wait', '', '', tostring(after), queued} end
end
if not s[1] then redis.call('HSET', h, 'window', window) end
return take()
end
"""
ACQUIRE = ACQUIRE_FN + "return acquire(KEYS, ARGV)\n"

# KEYS: hash, busy, leases, waiting, tickets. ARGV: member, hop failed (0/1), positive base,
# positive per window (0/1), negative base, negative per window, initial, limit,
# cohort limit, dsn, reason, backoff, rate, ttl, dest id, lease, how long a ticket counts,
# agent id, how much younger its own ticket may be (grant).
RELEASE_FN = """
local function release(KEYS, ARGV)
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local h, busy = KEYS[1], KEYS[2]
local n = redis.call('ZCARD', busy)
redis.call('ZREM', KEYS[3], ARGV[15] .. '\\n' .. ARGV[1])
if redis.call('ZREM', busy, ARGV[1]) == 0 then return {'gone'} end
local initial, limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local s = redis.call('HMGET', h, 'window', 'success', 'failure', 'fail_cohorts', 'dead_until',
                     'dsn', 'reason')
local after = '0'
local window = tonumber(s[1]) or initial
local success, failure = tonumber(s[2]) or 0, tonumber(s[3]) or 0
local cohorts, dead = tonumber(s[4]) or 0, tonumber(s[5]) or 0
local function feedback(base, per_window)
  if per_window == '1' then return tonumber(base) / window end
  return tonumber(base)
end
if tonumber(ARGV[13]) > 0 then
  after = tostring(now + tonumber(ARGV[13])); redis.call('HSET', h, 'next_start', after)
end
if ARGV[2] == '1' then
  if dead == 0 then
    cohorts = cohorts + 1 / window
    local cohort_limit = tonumber(ARGV[9])
    if cohort_limit > 0 and cohorts >= cohort_limit then
      dead = now + tonumber(ARGV[12])
      window = 0
      s[6], s[7] = ARGV[10], ARGV[11]
      redis.call('HSET', h, 'dsn', ARGV[10], 'reason', ARGV[11])
    else
      local f = feedback(ARGV[5], ARGV[6])
      failure = failure - f
      while failure - f / 2 < 0 do
        window = window - 1; success = 0; failure = failure + 1
      end
      if window < 1 then window = 1 end
    end
  end
else
  cohorts = 0
  if dead > 0 then
    dead = 0; success = 0; failure = 0
    if n > 0 then window = n else window = initial end
    redis.call('HDEL', h, 'dsn', 'reason')
  elseif limit == 0 or limit > window then
    if window < n + initial then
      local f = feedback(ARGV[3], ARGV[4])
      success = success + f
      while success + f / 2 >= 1 do
        window = window + 1; success = success - 1; failure = 0
      end
      if limit > 0 and window > limit then window = limit end
    end
  end
end
redis.call('HSET', h, 'window', window, 'success', success, 'failure', failure,
           'fail_cohorts', cohorts, 'dead_until', dead)
redis.call('EXPIRE', h, ARGV[14]); redis.call('EXPIRE', busy, ARGV[14])
local waiting = redis.call('SISMEMBER', KEYS[4], ARGV[15])
if dead > now then return {'dead', s[6] or '4.0.0', s[7] or '', tostring(waiting), '0'} end
return {'ok', '', '', tostring(waiting), after}
end
"""
RELEASE = RELEASE_FN + "return release(KEYS, ARGV)\n"

# After a release that left room (not dead, no parked job owed it, no rate delay):
# the oldest live tickets take the free slots, each as its job had asked; among those
# at most OWN_FIRST younger than the oldest, the releasing agent's own first.
GRANT_FN = """
local function grant(KEYS, ARGV, out)
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local busy, tickets, lease = KEYS[2], KEYS[5], tonumber(ARGV[16])
local window = tonumber(redis.call('HGET', KEYS[1], 'window')) or tonumber(ARGV[7])
local limit = tonumber(ARGV[8])
if limit > 0 and window > limit then window = limit end
if window < 1 then window = 1 end
local room = window - redis.call('ZCARD', busy)
while room > 0 do
  local head = redis.call('ZRANGE', tickets, 0, 15, 'WITHSCORES')
  if #head == 0 then break end
  local oldest = tonumber(head[2])
  if oldest < now - tonumber(ARGV[17]) then
    redis.call('ZREM', tickets, head[1])  -- its agent died
  else
    local pick, mine = head[1], ARGV[18] .. '\\n'
    for i = 1, #head, 2 do
      if tonumber(head[i + 1]) > oldest + tonumber(ARGV[19]) then break end
      if string.sub(head[i], 1, #mine) == mine then pick = head[i]; break end
    end
    redis.call('ZREM', tickets, pick)
    local member = string.sub(pick, #(string.match(pick, '^[^\\n]*')) + 2)
    redis.call('ZADD', busy, now + lease, member)
    redis.call('ZADD', KEYS[3], now + lease, ARGV[15] .. '\\n' .. member)
    table.insert(out, pick); room = room - 1
  end
end
return out
end
"""

# The release, then the grants: items 6... of the answer are the tickets served (one call
# for every delivery that follows another to a busy destination, in any agent).
FREE = RELEASE_FN + GRANT_FN + """
local r = release(KEYS, ARGV)
if r[1] == 'ok' and r[4] == '0' and r[5] == '0' then grant(KEYS, ARGV, r) end
return r
"""

# The acquire's KEYS and ARGV: the job stops waiting; its ticket is dropped unless it was
# served already (then it holds its slot: go), and it asks once more without one.
GIVE_UP = ACQUIRE_FN + """
redis.call('ZREM', KEYS[5], ARGV[8])
return acquire(KEYS, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ''})
"""

# KEYS: leases. ARGV: how many.
EXPIRED = """
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# KEYS: waiting. ARGV: the key prefix. Destinations with parked jobs that may move:
# room in the window and no rate delay running, or dead (to be drained or revived).
READY = """
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local out = {}
for _, ident in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local tab = string.find(ident, '\t', 1, true)
  if tab then
    local base = ARGV[1] .. string.sub(ident, 1, tab - 1) .. ':' .. string.sub(ident, tab + 1)
    local s = redis.call('HMGET', base, 'window', 'dead_until', 'next_start')
    local window = tonumber(s[1]) or 1
    if window < 1 then window = 1 end
    if (tonumber(s[2]) or 0) > 0 or (redis.call('ZCARD', base .. ':busy') < window
        and (tonumber(s[3]) or 0) <= now) then
      table.insert(out, ident)
    end
  end
end
return out
"""

# KEYS: busy, leases. ARGV: member, lease, dest id: keep a slot whose job still runs.
RENEW = """
local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3] .. '\\n' .. ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[2], ARGV[3] .. '\\n' .. ARGV[1])
return 0
"""


# KEYS: destination hashes. Dead ones come back at their next request (as when
# their backoff has passed): the window starts again, cohorts are forgotten.
REVIVE = """
local n = 0
for _, h in ipairs(KEYS) do
  if (tonumber(redis.call('HGET', h, 'dead_until')) or 0) > 1 then
    redis.call('HSET', h, 'dead_until', 1); n = n + 1
  end
end
return n
"""
