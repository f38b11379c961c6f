-- Settle the queue (bounded), then count it.
-- Returns {ready, scheduled, in_flight, dead, expired, oldest ready age in ms or -1,
-- processed, failed}.
local now = clock()
settle(now, tonumber(ARGV[1]))
local ready, oldest = 0, nil
for _, prio in ipairs(redis.call('ZRANGE', PRIOS, 0, -1)) do
  ready = ready + redis.call('LLEN', READY .. prio)
  local head = redis.call('LINDEX', READY .. prio, 0)
  if head then
    local r = ready_at(redis.call('HGET', JOBS, 'p:' .. head) or '') or now
    if not oldest or r < oldest then oldest = r end
  end
end
local age = -1
if oldest then age = math.max(0, now - oldest) end
return {
  ready,
  redis.call('ZCARD', SCHEDULED),
  redis.call('ZCARD', LEASES),
  redis.call('ZCARD', DEAD),
  tonumber(redis.call('GET', B .. ':expired') or '0'),
  age,
  tonumber(redis.call('GET', B .. ':processed') or '0'),
  tonumber(redis.call('GET', B .. ':failed') or '0'),
}
