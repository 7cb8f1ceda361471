-- A NULL mode becomes the old default, 'isc-failover', before the column is NOT NULL
-- again: an ISC pair keeps running as it did. A Kea pair that left its mode NULL (so ran
-- hot-standby) is then an ISC pair, which Kea generators refuse (failover_mode_format):
-- set its mode to 'kea-hot-standby' before downgrading. The update is captured like any
-- write, so the generators re-read the pairs.
-- The update queues the deferred scope check (dhcp_failover_same_scope), and ALTER TABLE
-- refuses a table with pending trigger events: check it at once, then defer it again.
SET CONSTRAINTS dhcp_failover_same_scope IMMEDIATE;
UPDATE dhcp_failover SET mode = 'isc-failover' WHERE mode IS NULL;
SET CONSTRAINTS dhcp_failover_same_scope DEFERRED;
ALTER TABLE dhcp_failover
    ALTER COLUMN mode SET DEFAULT 'isc-failover',
    ALTER COLUMN mode SET NOT NULL;
