-- Read dead jobs: ARGV[1] = 'range' with offset, count (newest first), or 'ids' followed by ids.
-- Returns {id, payload, attempt, reason, died (µs)} per dead job found.
local out = {}
local ids
if ARGV[1] == 'range' then
  local offset, count = tonumber(ARGV[2]), tonumber(ARGV[3])
  if count <= 0 then return out end
  ids = redis.call('ZREVRANGE', DEAD, offset, offset + count - 1)
else
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
for _, id in ipairs(ids) do
  local died = redis.call('ZSCORE', DEAD, id)
  if died then
    local f = redis.call('HMGET', JOBS, 'p:' .. id, 'n:' .. id, 'u:' .. id, 'reason:' .. id)
    if f[1] then
      out[#out + 1] = { id, f[1], attempt_of(f[2], f[3]), f[4] or '', died }
    end
  end
end
return out
