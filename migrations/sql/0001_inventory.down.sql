DROP TABLE IF EXISTS host_service, service, interface, subnet, host, hardware_type;
DROP SCHEMA IF EXISTS machinedb CASCADE;
