-- Delete the dead jobs with the ids in ARGV. Returns how many were deleted.
local gone = {}
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', DEAD, id) == 1 then gone[#gone + 1] = id end
end
drop_jobs(gone)
return #gone
