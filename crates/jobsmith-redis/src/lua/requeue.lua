-- Put dead jobs back, ready now, attempts reset, idempotency keys re-taken.
-- ARGV: per job: id, payload, priority, expires_at (ms, 0 = never), key ('' = none). Returns how many.
local now = clock()
local n = 0
for i = 1, #ARGV, 5 do
  local id, payload, prio, expires, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('ZREM', DEAD, id) == 1 then
    -- The reservation count `n` carries on, so no old lease token can match
    -- again; handing back all of them (`u = n`) resets the attempt to 0.
    local taken = redis.call('HGET', JOBS, 'n:' .. id) or '0'
    drop_jobs({ id })
    redis.call('HSET', JOBS, 'p:' .. id, int(now) .. ' ' .. payload, 'n:' .. id, taken,
      'u:' .. id, taken, 'pr:' .. id, prio, 'x:' .. id, expires)
    if key ~= '' then
      redis.call('HSET', JOBS, 'k:' .. id, key)
      redis.call('SET', IDEM .. key, id)
    end
    push_ready(id, prio, false)
    n = n + 1
  end
end
if n > 0 then wake(n) end
return n
