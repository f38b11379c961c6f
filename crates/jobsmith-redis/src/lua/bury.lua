-- Move a leased job to the dead-letter queue with a reason, free its
-- idempotency key, then apply retention (count and age, bounded per call).
-- ARGV: id, token, reason, dead_max, dead_max_age (ms). Returns 1 (held) or 0 (lost).
local id, token, reason = ARGV[1], ARGV[2], ARGV[3]
local dead_max, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
if not held(id, token) then return 0 end
local now, now_us = clock()
redis.call('ZREM', LEASES, id)
redis.call('INCR', B .. ':failed')
free_key(id, redis.call('HGET', JOBS, 'k:' .. id))
redis.call('HSET', JOBS, 'reason:' .. id, reason)
redis.call('ZADD', DEAD, int(now_us), id)
local limit = 1000
local old = redis.call('ZRANGEBYSCORE', DEAD, '-inf', '(' .. int(now_us - max_age * 1000), 'LIMIT', 0, limit)
for _, victim in ipairs(old) do
  redis.call('ZREM', DEAD, victim)
end
drop_jobs(old)
local excess = redis.call('ZCARD', DEAD) - dead_max
if excess > 0 then
  if excess > limit then excess = limit end
  local victims = redis.call('ZRANGE', DEAD, 0, excess - 1)
  for _, victim in ipairs(victims) do
    redis.call('ZREM', DEAD, victim)
  end
  drop_jobs(victims)
end
return 1
