-- Write dead jobs moved from another backend, each id at most once ever.
-- ARGV: per job: id, '<ms> <payload>', reason, died (µs), attempt.
-- Returns 1 (written) or 0 (imported before) per job.
local out = {}
for i = 1, #ARGV, 5 do
  local id, payload, reason, died, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('SADD', IMPORTED, id) == 0 or redis.call('HEXISTS', JOBS, 'p:' .. id) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', JOBS, 'p:' .. id, payload, 'n:' .. id, attempt, 'reason:' .. id, reason)
    redis.call('ZADD', DEAD, died, id)
    out[#out + 1] = 1
  end
end
return out
