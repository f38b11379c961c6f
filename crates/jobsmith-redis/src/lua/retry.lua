-- Put a leased job back to run at run_at, storing its new envelope; the attempt stays counted.
-- ARGV: id, token, payload, priority, run_at (ms), expires_at (ms, 0 = never). Returns 1 (held) or 0 (lost).
local id, token, payload, prio = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local run_at, expires = tonumber(ARGV[5]), ARGV[6]
if not held(id, token) then return 0 end
local now = clock()
redis.call('ZREM', LEASES, id)
redis.call('INCR', B .. ':failed')
local r = ARGV[5]
if run_at <= now then r = int(now) end
redis.call('HSET', JOBS, 'p:' .. id, r .. ' ' .. payload, 'pr:' .. id, prio, 'x:' .. id, expires)
if run_at > now then
  schedule({ ARGV[5], id })
else
  push_ready(id, prio, false)
  wake(1)
end
return 1
