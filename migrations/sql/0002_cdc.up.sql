-- Change capture: every write to a tracked table leaves rows in the cdc.change outbox
-- in the same transaction, and rings the 'cdc_change' doorbell when the relay sleeps.

CREATE SCHEMA cdc;
COMMENT ON SCHEMA cdc IS 'Change data capture: the outbox and its triggers';

CREATE TABLE cdc.change (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    op text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    pk jsonb,
    before jsonb,
    after jsonb,
    txid bigint NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE cdc.change IS
    'Outbox: one row per captured row change; the relay deletes a row once the broker stored it';

-- The doorbell. A NOTIFY takes a cluster-wide lock at commit, which serializes
-- concurrent writers, so writers ring only while the relay is armed (idle, waiting).
-- The relay disarms when it wakes, drains, re-arms, then drains once more before it
-- sleeps; its fallback interval bounds the wait of a change that raced the re-arm.
CREATE TABLE cdc.doorbell (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    armed boolean NOT NULL DEFAULT true,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO cdc.doorbell DEFAULT VALUES;

CREATE FUNCTION cdc.ring_v1() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- identical notifications within one transaction fold into one
    IF (SELECT armed FROM cdc.doorbell) THEN
        PERFORM pg_notify('cdc_change', '');
    END IF;
END $$;

-- Statement-level capture with transition tables. TG_ARGV holds the primary key
-- columns, given by cdc.track(). SECURITY DEFINER: writers need no rights on cdc.
CREATE FUNCTION cdc.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl text := CASE WHEN TG_TABLE_SCHEMA = 'public' THEN TG_TABLE_NAME
                     ELSE TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME END;
    txid bigint := pg_current_xact_id()::text::bigint;
    pk_new text;
    pk_old text;
    order_new text;
    order_old text;
    join_cond text;
    captured bigint := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO cdc.change (table_name, op, txid) VALUES (tbl, 'TRUNCATE', txid);
        PERFORM cdc.ring_v1();
        RETURN NULL;
    END IF;

    SELECT 'jsonb_build_object(' || string_agg(format('%L, n.%I', c, c), ', ') || ')',
           'jsonb_build_object(' || string_agg(format('%L, o.%I', c, c), ', ') || ')',
           string_agg(format('n.%I', c), ', '),
           string_agg(format('o.%I', c), ', '),
           string_agg(format('o.%I = n.%I', c, c), ' AND ')
      INTO pk_new, pk_old, order_new, order_old, join_cond
      FROM unnest(TG_ARGV) AS c;

    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            'INSERT INTO cdc.change (table_name, op, pk, after, txid)
             SELECT $1, ''INSERT'', %s, to_jsonb(n), $2 FROM new_rows n ORDER BY %s',
            pk_new, order_new) USING tbl, txid;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format(
            'INSERT INTO cdc.change (table_name, op, pk, before, txid)
             SELECT $1, ''DELETE'', %s, to_jsonb(o), $2 FROM old_rows o ORDER BY %s',
            pk_old, order_old) USING tbl, txid;
    ELSE
        -- Pair old and new images by primary key; skip rows the UPDATE left as they were.
        -- A row whose key changed appears with only one of its images.
        EXECUTE format(
            'INSERT INTO cdc.change (table_name, op, pk, before, after, txid)
             SELECT $1, ''UPDATE'', CASE WHEN n IS NULL THEN %s ELSE %s END,
                    to_jsonb(o), to_jsonb(n), $2
               FROM old_rows o FULL JOIN new_rows n ON %s
              WHERE to_jsonb(o) IS DISTINCT FROM to_jsonb(n)
              ORDER BY %s',
            pk_old, pk_new, join_cond, order_new) USING tbl, txid;
    END IF;
    GET DIAGNOSTICS captured = ROW_COUNT;
    IF captured > 0 THEN
        PERFORM cdc.ring_v1();
    END IF;
    RETURN NULL;
END $$;

-- Start capturing a table: one call from a migration, e.g. SELECT cdc.track('public.rack');
CREATE FUNCTION cdc.track(target regclass, capture_function text DEFAULT 'cdc.capture_v1')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    pk_args text;
BEGIN
    SELECT string_agg(quote_literal(a.attname), ', ' ORDER BY k.ord) INTO pk_args
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = target AND i.indisprimary;
    IF pk_args IS NULL THEN
        RAISE EXCEPTION 'cdc.track(%): the table needs a primary key', target;
    END IF;
    PERFORM cdc.untrack(target);
    EXECUTE format('CREATE TRIGGER cdc_capture_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, capture_function, pk_args);
    EXECUTE format('CREATE TRIGGER cdc_capture_update AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, capture_function, pk_args);
    EXECUTE format('CREATE TRIGGER cdc_capture_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, capture_function, pk_args);
    EXECUTE format('CREATE TRIGGER cdc_capture_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', target, capture_function, pk_args);
END $$;

CREATE FUNCTION cdc.untrack(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS cdc_capture_insert ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS cdc_capture_update ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS cdc_capture_delete ON %s', target);
    EXECUTE format('DROP TRIGGER IF EXISTS cdc_capture_truncate ON %s', target);
END $$;

-- Tables whose changes are captured, for operators and the relay's status command.
CREATE VIEW cdc.tracked_table AS
SELECT DISTINCT t.tgrelid::regclass AS table_name
  FROM pg_trigger t
 WHERE t.tgname = 'cdc_capture_insert';

SELECT cdc.track('public.hardware_type');
SELECT cdc.track('public.host');
SELECT cdc.track('public.subnet');
SELECT cdc.track('public.interface');
SELECT cdc.track('public.service');
SELECT cdc.track('public.host_service');
