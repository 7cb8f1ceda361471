-- untrack before dropping: it removes the generated capture function too
SELECT cdc.untrack_v2('public.dhcp_failover');
DROP TRIGGER dhcp_server_subnet_failover_scope ON dhcp_server_subnet;
DROP TABLE dhcp_failover;
DROP FUNCTION machinedb.check_dhcp_failover_scope_v1();
DROP FUNCTION machinedb.check_dhcp_failover_v1();
