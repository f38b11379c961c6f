-- Reserve up to ARGV[1] ready jobs, leasing each for ARGV[2] ms.
-- First promotes due scheduled jobs and reclaims expired leases (bounded by
-- ARGV[3] each), then pops by strict priority, FIFO within a priority,
-- dropping and counting jobs whose TTL has passed. A job's field `n` counts
-- its reservations; its new value is the lease token.
-- Returns {next_event_in_ms or -1, {job name of each job dropped as expired},
-- {id, token, attempt, payload}...}: the caller counts the dropped jobs in
-- its metrics, by name.
local now = clock()
local max, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
settle(now, limit)
local out = { -1, {} }
local dropped_names = out[2]
local taken, expired = 0, 0
local until_ms = now + lease
local leases = {}
local dropped = {}
local counts = {}   -- n:<id>, new count pairs for one HSET
local last_n = {}   -- id -> count set by this call, for an id listed twice
local prios = redis.call('ZREVRANGE', PRIOS, 0, -1)
for _, prio in ipairs(prios) do
  if taken >= max then break end
  local list = READY .. prio
  while taken < max do
    local ids = redis.call('LPOP', list, max - taken)
    if not ids then break end
    -- Five fields per job, read for a hundred jobs at a time (within MAX_UNPACK).
    for s = 1, #ids, 100 do
      local e = math.min(s + 99, #ids)
      local names = {}
      for j = s, e do
        local id = ids[j]
        names[#names + 1] = 'p:' .. id
        names[#names + 1] = 'x:' .. id
        names[#names + 1] = 'k:' .. id
        names[#names + 1] = 'n:' .. id
        names[#names + 1] = 'u:' .. id
      end
      local f = redis.call('HMGET', JOBS, unpack(names))
      for j = s, e do
        local id = ids[j]
        local o = (j - s) * 5
        local payload = f[o + 1]
        if payload then
          local x = tonumber(f[o + 2] or '0') or 0
          if x > 0 and x <= now then
            dropped[#dropped + 1] = id
            dropped_names[#dropped_names + 1] = job_name(payload)
            free_key(id, f[o + 3])
            expired = expired + 1
          else
            local n = (last_n[id] or tonumber(f[o + 4] or '0') or 0) + 1
            last_n[id] = n
            local token = int(n)
            counts[#counts + 1] = 'n:' .. id
            counts[#counts + 1] = token
            leases[#leases + 1] = until_ms
            leases[#leases + 1] = id
            taken = taken + 1
            out[taken + 2] = { id, token, attempt_of(token, f[o + 5]), payload }
          end
        end
      end
    end
  end
  if redis.call('LLEN', list) == 0 then
    redis.call('ZREM', PRIOS, prio)
  end
end
each_slice('HSET', JOBS, counts)
if #leases > 0 then each_slice('ZADD', LEASES, leases) end
if #dropped > 0 then
  drop_jobs(dropped)
  redis.call('INCRBY', B .. ':expired', expired)
end
if any_ready() then
  -- Work is left: let one more blocked reserve join in.
  wake(1)
else
  -- Nothing is ready, so no token left here is still owed to anyone.
  redis.call('DEL', WAKE)
end
local nxt = -1
local s = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if s[2] then nxt = math.max(0, tonumber(s[2]) - now) end
local l = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
if l[2] then
  local d = math.max(0, tonumber(l[2]) - now)
  if nxt < 0 or d < nxt then nxt = d end
end
out[1] = nxt
return out
