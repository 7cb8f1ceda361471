-- Least privilege: three group roles (NOLOGIN). Operators create login users and grant
-- them one group each, e.g.
--   CREATE ROLE relay1 LOGIN PASSWORD '...' IN ROLE machinedb_relay;
-- machinedb_app        writes the inventory; cannot touch the outbox (capture runs as
--                      the SECURITY DEFINER trigger function's owner)
-- machinedb_relay      reads and deletes outbox rows, arms the doorbell, LISTENs
-- machinedb_generator  reads the inventory, nothing else
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['machinedb_app', 'machinedb_relay', 'machinedb_generator'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END $$;

REVOKE ALL ON SCHEMA cdc FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA cdc FROM PUBLIC;

GRANT USAGE ON SCHEMA public, machinedb TO machinedb_app, machinedb_generator;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
    ON hardware_type, host, subnet, interface, service, host_service TO machinedb_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO machinedb_app;

GRANT SELECT ON hardware_type, host, subnet, interface, service, host_service TO machinedb_generator;

GRANT USAGE ON SCHEMA cdc TO machinedb_relay;
GRANT SELECT, DELETE ON cdc.change TO machinedb_relay;
GRANT SELECT, UPDATE ON cdc.doorbell TO machinedb_relay;
GRANT SELECT ON cdc.tracked_table TO machinedb_relay;
