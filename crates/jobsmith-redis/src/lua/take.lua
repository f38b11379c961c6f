-- Take up to ARGV[1] waiting jobs (ready by priority, then scheduled by due
-- time) out of the workers' reach, held for ARGV[2] ms, for a migration.
-- A hold is a lease that does not count an attempt: `n` and `u` both go up,
-- so the new `n` is the token and the attempt stays. When the hold runs out,
-- settle puts the job back, scheduled again if its time has not come.
-- Returns {id, token, attempt, payload} per job.
local now = clock()
local max, hold, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
settle(now, limit)
local ids = {}
for _, prio in ipairs(redis.call('ZREVRANGE', PRIOS, 0, -1)) do
  if #ids >= max then break end
  local list = READY .. prio
  local got = redis.call('LPOP', list, max - #ids)
  if got then
    for _, id in ipairs(got) do ids[#ids + 1] = id end
  end
  if redis.call('LLEN', list) == 0 then
    redis.call('ZREM', PRIOS, prio)
  end
end
if #ids < max then
  local due = redis.call('ZRANGE', SCHEDULED, 0, max - #ids - 1)
  for _, id in ipairs(due) do
    redis.call('ZREM', SCHEDULED, id)
    ids[#ids + 1] = id
  end
end
local out = {}
local until_ms = now + hold
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', JOBS, 'p:' .. id, 'n:' .. id, 'u:' .. id)
  if f[1] then
    local n = (tonumber(f[2] or '0') or 0) + 1
    local u = (tonumber(f[3] or '0') or 0) + 1
    redis.call('HSET', JOBS, 'n:' .. id, int(n), 'u:' .. id, int(u))
    redis.call('ZADD', LEASES, until_ms, id)
    out[#out + 1] = { id, int(n), n - u, f[1] }
  end
end
return out
