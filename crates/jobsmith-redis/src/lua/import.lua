-- Write jobs moved from another backend, each id at most once ever.
-- ARGV: per job: id, '<ready ms> <payload>', priority, run_at (ms),
-- expires_at (ms, 0 = never), idempotency key ('' = none), attempt.
-- The marker set IMPORTED remembers every id written, so a migration that
-- was interrupted and runs again skips what it already moved.
-- Returns 1 (written) or 0 (imported before) per job.
local now = clock()
local out = {}
local made_ready = 0
for i = 1, #ARGV, 7 do
  local id, payload, prio, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local expires, key, attempt = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  if redis.call('SADD', IMPORTED, id) == 0 or redis.call('HEXISTS', JOBS, 'p:' .. id) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', JOBS, 'p:' .. id, payload, 'n:' .. id, attempt)
    if prio ~= '0' then redis.call('HSET', JOBS, 'pr:' .. id, prio) end
    if expires ~= '0' then redis.call('HSET', JOBS, 'x:' .. id, expires) end
    if key ~= '' then
      redis.call('HSET', JOBS, 'k:' .. id, key)
      -- The job is kept even if another job holds its key here.
      redis.call('SET', IDEM .. key, id, 'NX')
    end
    if run_at > now then
      schedule({ ARGV[i + 3], id })
    else
      push_ready(id, prio, false)
      made_ready = made_ready + 1
    end
    out[#out + 1] = 1
  end
end
if made_ready > 0 then wake(made_ready) end
return out
