SELECT cdc.untrack_v2(t.table_name), cdc.track(t.table_name) FROM cdc.tracked_table t;
DROP FUNCTION cdc.untrack_v2(regclass);
DROP FUNCTION cdc.track_v2(regclass);
DROP FUNCTION cdc.capture_v2_name(regclass);
