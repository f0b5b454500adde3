-- A project's usage is read by time first (the rows of the window, each checked against its
-- key's project), so that its cost follows the usage in the window, not the project's key count.
CREATE INDEX key_usage_minute ON key_usage (minute);
CREATE INDEX key_usage_hourly_hour ON key_usage_hourly (hour);
CREATE INDEX key_usage_daily_day ON key_usage_daily (day);
