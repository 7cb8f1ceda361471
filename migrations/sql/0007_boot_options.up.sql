-- Boot options for network installs (PXE): where a booting machine finds its boot
-- loader. The same five columns on subnet, hardware_type and host, all NULL by default:
--   next_server           the TFTP/HTTP server (BOOTP siaddr), a single IPv4 address
--   boot_file             the boot file (BOOTP file) for any client
--   boot_file_bios        ... for a client that says it is BIOS x86   (option 93 = 0)
--   boot_file_uefi_x64    ... for x64 UEFI                            (option 93 = 7 or 9)
--   boot_file_uefi_arm64  ... for ARM64 UEFI                          (option 93 = 11)
-- Precedence: host over hardware type over subnet. next_server comes from the most
-- specific level that sets it; a client of one of the three architectures gets the
-- first of: the host's file for it, the host's boot_file, the same two of the hardware
-- type, then of the subnet (docs/dba.md).
-- Columns rather than a table keyed by architecture: the architectures PXE firmware
-- sends in practice are these three, each level has one row to read, a NULL means
-- "inherit", and the existing capture and grants of the three tables cover them.

-- A boot file name goes into the 128-octet BOOTP 'file' field, a NUL-terminated string
-- (Kea refuses a boot-file-name over 127 characters), and into Kea's hosts database
-- (dhcp4_boot_file_name varchar(128)); both DHCP servers' configs quote it.
-- So: 1-127 printable ASCII characters, no space, quote, apostrophe or backslash.
CREATE FUNCTION machinedb.is_boot_file_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN name ~ '^[!#-&(-[\]-~]{1,127}$';

-- A next server is one IPv4 unicast address: not 0.0.0.0, multicast or broadcast.
CREATE FUNCTION machinedb.is_next_server(addr inet) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN machinedb.is_ipv4_address(addr) AND addr <> '0.0.0.0'::inet AND NOT addr <<= '224.0.0.0/3'::inet;

ALTER TABLE subnet
    ADD COLUMN next_server inet,
    ADD COLUMN boot_file text,
    ADD COLUMN boot_file_bios text,
    ADD COLUMN boot_file_uefi_x64 text,
    ADD COLUMN boot_file_uefi_arm64 text,
    ADD CONSTRAINT subnet_next_server_ipv4 CHECK (machinedb.is_next_server(next_server)),
    ADD CONSTRAINT subnet_boot_file_name CHECK (
        machinedb.is_boot_file_name(boot_file) AND machinedb.is_boot_file_name(boot_file_bios)
        AND machinedb.is_boot_file_name(boot_file_uefi_x64)
        AND machinedb.is_boot_file_name(boot_file_uefi_arm64));
ALTER TABLE hardware_type
    ADD COLUMN next_server inet,
    ADD COLUMN boot_file text,
    ADD COLUMN boot_file_bios text,
    ADD COLUMN boot_file_uefi_x64 text,
    ADD COLUMN boot_file_uefi_arm64 text,
    ADD CONSTRAINT hardware_type_next_server_ipv4 CHECK (machinedb.is_next_server(next_server)),
    ADD CONSTRAINT hardware_type_boot_file_name CHECK (
        machinedb.is_boot_file_name(boot_file) AND machinedb.is_boot_file_name(boot_file_bios)
        AND machinedb.is_boot_file_name(boot_file_uefi_x64)
        AND machinedb.is_boot_file_name(boot_file_uefi_arm64));
ALTER TABLE host
    ADD COLUMN next_server inet,
    ADD COLUMN boot_file text,
    ADD COLUMN boot_file_bios text,
    ADD COLUMN boot_file_uefi_x64 text,
    ADD COLUMN boot_file_uefi_arm64 text,
    ADD CONSTRAINT host_next_server_ipv4 CHECK (machinedb.is_next_server(next_server)),
    ADD CONSTRAINT host_boot_file_name CHECK (
        machinedb.is_boot_file_name(boot_file) AND machinedb.is_boot_file_name(boot_file_bios)
        AND machinedb.is_boot_file_name(boot_file_uefi_x64)
        AND machinedb.is_boot_file_name(boot_file_uefi_arm64));

-- The CHECKs above hold even with triggers disabled; this trigger gives the message,
-- naming the row, the column and the value. The five columns have the same names in
-- the three tables, so one function serves them all.
CREATE FUNCTION machinedb.check_boot_options_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    image jsonb := to_jsonb(NEW);
    label text := format('%s %s (%L)', TG_TABLE_NAME, coalesce(NEW.id::text, '(new)'),
                         left(coalesce(image->>'name', image->>'hostname'), 100));
    col text;
    value text;
BEGIN
    IF NEW.next_server IS NOT NULL AND NOT machinedb.is_next_server(NEW.next_server) THEN
        PERFORM machinedb.fail(TG_TABLE_NAME || '_next_server_ipv4', format(
            '%s: next_server %s is not a single IPv4 unicast address', label, NEW.next_server));
    END IF;
    FOREACH col IN ARRAY ARRAY['boot_file', 'boot_file_bios', 'boot_file_uefi_x64',
                               'boot_file_uefi_arm64'] LOOP
        value := image->>col;
        IF value IS NOT NULL AND NOT machinedb.is_boot_file_name(value) THEN
            PERFORM machinedb.fail(TG_TABLE_NAME || '_boot_file_name', format(
                '%s: %s %L%s is not a boot file name (1-127 printable ASCII characters without '
                'spaces, quotes, apostrophes or backslashes; NULL for none)',
                label, col, left(value, 100), CASE WHEN length(value) > 100 THEN '...' ELSE '' END));
        END IF;
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER subnet_boot_options_check
    BEFORE INSERT OR UPDATE OF next_server, boot_file, boot_file_bios, boot_file_uefi_x64,
        boot_file_uefi_arm64 ON subnet
    FOR EACH ROW EXECUTE FUNCTION machinedb.check_boot_options_v1();
CREATE TRIGGER hardware_type_boot_options_check
    BEFORE INSERT OR UPDATE OF next_server, boot_file, boot_file_bios, boot_file_uefi_x64,
        boot_file_uefi_arm64 ON hardware_type
    FOR EACH ROW EXECUTE FUNCTION machinedb.check_boot_options_v1();
CREATE TRIGGER host_boot_options_check
    BEFORE INSERT OR UPDATE OF next_server, boot_file, boot_file_bios, boot_file_uefi_x64,
        boot_file_uefi_arm64 ON host
    FOR EACH ROW EXECUTE FUNCTION machinedb.check_boot_options_v1();

-- The three tables are captured (cdc.track_v2, migration 0004: whole-row images, so new
-- columns are in every change message) and granted (migration 0003) already; the
-- generator reads hardware_type from now on, which migration 0003 granted it.
