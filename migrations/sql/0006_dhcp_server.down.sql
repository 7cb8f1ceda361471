-- untrack before dropping: it removes the generated capture functions too
SELECT cdc.untrack_v2('public.dhcp_server_subnet');
SELECT cdc.untrack_v2('public.dhcp_server');
DROP TABLE dhcp_server_subnet;
DROP TABLE dhcp_server;
DROP FUNCTION machinedb.check_dhcp_server_v1();
DROP FUNCTION machinedb.is_dhcp_server_name(text);
