-- Complete a bounded batch of leased jobs.
-- ARGV: unique_for (ms), then pairs of id, lease token. Returns 1 (held) or 0 (lost) per pair.
local unique_for = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local out = {}
if #ids == 0 then return out end
local scores = redis.call('ZMSCORE', LEASES, unpack(ids))
local gone = {}
for j, id in ipairs(ids) do
  local token = ARGV[2 * j + 1]
  local f = scores[j] and redis.call('HMGET', JOBS, 'n:' .. id, 'k:' .. id)
  if f and f[1] == token then
    gone[#gone + 1] = id
    local key = f[2]
    if key and key ~= '' then
      local ik = IDEM .. key
      if redis.call('GET', ik) == id then
        if unique_for > 0 then
          redis.call('SET', ik, id, 'PX', unique_for)
        else
          redis.call('DEL', ik)
        end
      end
    end
    out[j] = 1
  else
    out[j] = 0
  end
end
if #gone > 0 then
  redis.call('ZREM', LEASES, unpack(gone))
  drop_jobs(gone)
  redis.call('INCRBY', B .. ':processed', #gone)
end
return out
