-- Shared by every script (prepended in Rust). KEYS[1] is the queue's key
-- base, `{prefix:queue}`: every key below is derived from it and so carries
-- its hash tag, which puts the whole queue in one Cluster slot.
local B = KEYS[1]
local READY = B .. ':ready:'      -- one list of job ids per priority
local PRIOS = B .. ':prios'       -- zset: the priorities whose list is not empty
local SCHEDULED = B .. ':scheduled' -- zset: id scored by run_at (ms)
local LEASES = B .. ':leases'     -- zset: id scored by lease expiry (ms)
local DEAD = B .. ':dead'         -- zset: id scored by time of death (µs)
local WAKE = B .. ':wake'         -- list: wake-up tokens for blocked reserves
local JOBS = B .. ':jobs'         -- hash: every job's fields, named `<tag>:<id>` (see below)
local IDEM = B .. ':idem:'        -- string per idempotency key: the owning job id
local IMPORTED = B .. ':imported' -- set: ids written by a migration (import), each once
local MAX_WAKE = 32
-- Most values handed to one variadic command through unpack(); Lua fails near 8,000.
local MAX_UNPACK = 500

-- A job's fields in JOBS, each named tag .. ':' .. id (a tag holds no ':',
-- so no two jobs' fields can share a name, whatever their ids):
--   p  '<r> <payload>': when it is or was to become ready (ms, digits), a
--      space, then the payload exactly as enqueued (Rust strips the prefix)
--   pr priority (absent = 0)        x  expires_at (ms, absent or 0 = never)
--   k  idempotency key              n  reservations so far
--   u  reservations handed back     reason  why it died
-- A plain job is one field: priority, TTL and key are written only when set.
local TAGS = { 'p:', 'pr:', 'x:', 'k:', 'n:', 'u:', 'reason:' }

-- The ready time at the head of a stored payload.
local function ready_at(p)
  return tonumber(string.match(p, '^(%d+) '))
end

-- The registered job name in a stored payload (after its ready-at prefix),
-- or '' when the payload is not an envelope. Decoded only for jobs dropped
-- unrun, so the cost stays off the hot path.
local function job_name(p)
  local ok, env = pcall(cjson.decode, (string.gsub(p, '^%d+ ', '', 1)))
  if ok and type(env) == 'table' and type(env.job) == 'string' then return env.job end
  return ''
end

-- Deletes every field of the given jobs, in bounded HDELs.
local function drop_jobs(ids)
  local names = {}
  for _, id in ipairs(ids) do
    for _, tag in ipairs(TAGS) do names[#names + 1] = tag .. id end
  end
  for i = 1, #names, MAX_UNPACK do
    redis.call('HDEL', JOBS, unpack(names, i, math.min(i + MAX_UNPACK - 1, #names)))
  end
end

-- A job's priority, or nil if the job is gone.
local function prio_of(id)
  if redis.call('HEXISTS', JOBS, 'p:' .. id) == 0 then return nil end
  return redis.call('HGET', JOBS, 'pr:' .. id) or '0'
end

-- A number as an integer string: Lua's own formatting keeps only 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- The server's clock, in milliseconds, and in microseconds.
local function clock()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return math.floor(us / 1000), us
end

-- Appends (or, for a job handed back, prepends) a job id to its priority's list.
local function push_ready(id, prio, head)
  local n
  if head then
    n = redis.call('LPUSH', READY .. prio, id)
  else
    n = redis.call('RPUSH', READY .. prio, id)
  end
  if n == 1 then
    redis.call('ZADD', PRIOS, prio, prio)
  end
end

-- MAX_WAKE wake tokens, to push any number of them in one RPUSH.
local TOKENS = {}
for i = 1, MAX_WAKE do TOKENS[i] = '1' end

-- Leaves up to n wake tokens for reserves blocked on this queue.
local function wake(n)
  if n > MAX_WAKE then n = MAX_WAKE end
  if redis.call('RPUSH', WAKE, unpack(TOKENS, 1, n)) > MAX_WAKE then
    redis.call('LTRIM', WAKE, 0, MAX_WAKE - 1)
  end
end

-- Frees an idempotency key if this job holds it.
local function free_key(id, key)
  if key and key ~= '' then
    local ik = IDEM .. key
    if redis.call('GET', ik) == id then
      redis.call('DEL', ik)
    end
  end
end

-- Calls a variadic command in bounded slices: `cmd key items...`.
local function each_slice(cmd, key, items)
  for i = 1, #items, MAX_UNPACK do
    redis.call(cmd, key, unpack(items, i, math.min(i + MAX_UNPACK - 1, #items)))
  end
end

-- Whether `token` is the live lease on job `id`: it is leased, and the
-- lease is its latest reservation (field `n` counts reservations).
local function held(id, token)
  return redis.call('ZSCORE', LEASES, id) and redis.call('HGET', JOBS, 'n:' .. id) == token
end

-- A job's attempt: reservations minus the ones handed back uncounted.
local function attempt_of(n, u)
  return (tonumber(n or '0') or 0) - (tonumber(u or '0') or 0)
end

-- When a reserve blocked on this queue is due to look again: the first
-- scheduled job or lease expiry (ms), as reserve.lua times its wait, or nil.
local function first_due()
  local s = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
  local l = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
  local a, b = tonumber(s[2]), tonumber(l[2])
  if a and b then return math.min(a, b) end
  return a or b
end

-- Schedules jobs: `due` holds run_at (ms), id pairs, as ZADD takes them.
-- Every path into SCHEDULED goes through here. A reserve blocked on this
-- queue timed its wait by what was due first when it began waiting, so a
-- job due sooner than that leaves a wake token: the reserve looks again and
-- times its wait anew.
local function schedule(due)
  if #due == 0 then return end
  local first = first_due()
  local soonest = tonumber(due[1])
  for i = 3, #due, 2 do
    soonest = math.min(soonest, tonumber(due[i]))
  end
  each_slice('ZADD', SCHEDULED, due)
  if not first or soonest < first then wake(1) end
end

-- Moves at most `limit` due scheduled jobs to ready, and at most `limit`
-- jobs whose lease ran out back to the head of ready. Returns how many.
local function settle(now, limit)
  local moved = 0
  local due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #due do
    local id = due[i]
    redis.call('ZREM', SCHEDULED, id)
    -- Its ready time, run_at, is already at the head of its payload.
    local prio = prio_of(id)
    if prio then
      push_ready(id, prio, false)
      moved = moved + 1
    end
  end
  local lost = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
  for i = #lost, 1, -1 do
    local id = lost[i]
    redis.call('ZREM', LEASES, id)
    local prio = prio_of(id)
    if prio then
      -- A scheduled job whose migration hold ran out waits for its time again.
      local r = ready_at(redis.call('HGET', JOBS, 'p:' .. id) or '') or 0
      if r > now then
        schedule({ r, id })
      else
        push_ready(id, prio, true)
        moved = moved + 1
      end
    end
  end
  return moved
end

-- Whether any job is ready.
local function any_ready()
  return redis.call('ZCARD', PRIOS) > 0
end
