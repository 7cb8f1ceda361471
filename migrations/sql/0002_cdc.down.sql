SELECT cdc.untrack(t.table_name) FROM cdc.tracked_table t;
DROP SCHEMA cdc CASCADE;
