-- Put a leased job back to run at run_at, storing its new envelope; the attempt stays counted.
-- ARGV: id, token, payload, priority, run_at (ms), expires_at (ms, 0 = never). Returns 1 (held) or 0 (lost).
local id, token, payload, prio = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local run_at, expires = tonumber(ARGV[5]), ARGV[6]
if not held(id, token) then return 0 end
local now = clock()
local h = JOB .. id
redis.call('ZREM', LEASES, id)
redis.call('HSET', h, 'p', payload, 'pr', prio, 'x', expires)
if run_at > now then
  redis.call('ZADD', SCHEDULED, run_at, id)
else
  redis.call('HSET', h, 'r', now)
  push_ready(id, prio, false)
  wake(1)
end
return 1
