-- dhcp_failover.mode may be NULL, and is by default: "the server's own default", which
-- the generator resolves by the format it writes (ISC dhcpd: 'isc-failover'; Kea:
-- 'kea-hot-standby'). A pair row written without a mode then runs on either kind of
-- server, and an explicit mode stays a choice. Existing rows keep the mode they hold.
-- Migration 0008's rules need no change: the CHECK dhcp_failover_mode_known passes a
-- NULL (a CHECK fails only on false), and check_dhcp_failover_v1's
-- `NEW.mode NOT IN (...)` is NULL for a NULL mode, so its IF does not fire.
ALTER TABLE dhcp_failover
    ALTER COLUMN mode DROP NOT NULL,
    ALTER COLUMN mode DROP DEFAULT;
