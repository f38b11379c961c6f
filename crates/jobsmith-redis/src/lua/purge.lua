-- Delete at most ARGV[2] dead jobs that died before ARGV[1] (µs, or '+inf' for all). Returns how many.
local ids = redis.call('ZRANGEBYSCORE', DEAD, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', DEAD, id)
end
drop_jobs(ids)
return #ids
