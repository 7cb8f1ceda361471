-- hardware_type.name and service.name are free text with a UNIQUE index. Without a
-- bound, a name too long for a btree entry (about 2,700 bytes) failed with "index row
-- requires N bytes", which names neither the row nor a rule. 255 characters fit any
-- encoding. Rows already longer are left alone until they are next written.
CREATE FUNCTION machinedb.check_name_length_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF length(NEW.name) > 255 THEN
        PERFORM machinedb.fail(TG_TABLE_NAME || '_name_length', format(
            '%s %s: name of %s characters is too long (255 at most): %L...',
            TG_TABLE_NAME, NEW.id, length(NEW.name), left(NEW.name, 40)));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER hardware_type_name_length BEFORE INSERT OR UPDATE OF name ON hardware_type
    FOR EACH ROW EXECUTE FUNCTION machinedb.check_name_length_v1();
CREATE TRIGGER service_name_length BEFORE INSERT OR UPDATE OF name ON service
    FOR EACH ROW EXECUTE FUNCTION machinedb.check_name_length_v1();
