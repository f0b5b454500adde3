DROP INDEX key_usage_daily_day;
DROP INDEX key_usage_hourly_hour;
DROP INDEX key_usage_minute;
