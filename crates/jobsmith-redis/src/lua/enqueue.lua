-- Enqueue a bounded batch of jobs into one queue.
-- ARGV: per job: id, '<run_at> <payload>' (the stored form, see common.lua),
-- priority, run_at (ms), expires_at (ms, 0 = never), idempotency key ('' = none).
-- Returns {position, owner id} for each job whose idempotency key another job
-- holds (positions count jobs from 1); every other job keeps its own id.
-- The batch's fields go into JOBS in a few variadic HSETs (one field for a
-- plain job), and the ready ids into one RPUSH per priority: only a job with
-- a key costs calls of its own.
local now = clock()
local out = {}
local names = {}
for i = 1, #ARGV, 6 do names[#names + 1] = 'p:' .. ARGV[i] end
local found = {}
for i = 1, #names, MAX_UNPACK do
  local last = math.min(i + MAX_UNPACK - 1, #names)
  local got = redis.call('HMGET', JOBS, unpack(names, i, last))
  for j = i, last do found[j] = got[j - i + 1] end
end
local fields = {}  -- name, value pairs for HSET
local due = {}     -- score, id pairs for ZADD SCHEDULED
local ready = {}   -- priority -> ids, appended in one RPUSH per slice
local made_ready = 0
local seen = {}
for j = 1, #names do
  local i = 6 * j - 5
  local id, payload, prio, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local expires, key = ARGV[i + 4], ARGV[i + 5]
  local owner = false
  if key ~= '' then
    owner = redis.call('GET', IDEM .. key)
    if not owner then
      redis.call('SET', IDEM .. key, id)
    end
  end
  if owner then
    out[#out + 1] = j
    out[#out + 1] = owner
  elseif not found[j] and not seen[id] then
    -- A job that exists already (a retried call) is queued once.
    seen[id] = true
    local n = #fields
    fields[n + 1] = names[j]; fields[n + 2] = payload
    if prio ~= '0' then n = #fields; fields[n + 1] = 'pr:' .. id; fields[n + 2] = prio end
    if expires ~= '0' then n = #fields; fields[n + 1] = 'x:' .. id; fields[n + 2] = expires end
    if key ~= '' then n = #fields; fields[n + 1] = 'k:' .. id; fields[n + 2] = key end
    if tonumber(run_at) > now then
      due[#due + 1] = run_at
      due[#due + 1] = id
    else
      local list = ready[prio]
      if not list then list = {}; ready[prio] = list end
      list[#list + 1] = id
      made_ready = made_ready + 1
    end
  end
end
-- Slices of an even length keep each name with its value.
each_slice('HSET', JOBS, fields)
schedule(due)
for prio, ids in pairs(ready) do
  local len = 0
  for j = 1, #ids, MAX_UNPACK do
    len = redis.call('RPUSH', READY .. prio, unpack(ids, j, math.min(j + MAX_UNPACK - 1, #ids)))
  end
  -- A list longer than what was just pushed was not empty, so its priority
  -- is already in PRIOS.
  if len == #ids then
    redis.call('ZADD', PRIOS, prio, prio)
  end
end
if made_ready > 0 then
  wake(made_ready)
end
return out
