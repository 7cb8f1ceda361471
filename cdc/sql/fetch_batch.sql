-- The next batch of unpublished changes after a cursor, in id order, with the message
-- body already encoded as JSON text. {body} is the json_build_object of the message
-- contract's fields (machinedb.change_message), filled in by cdc.outbox. The session
-- runs with TimeZone = UTC, so captured_at reads as ISO 8601 with a +00:00 offset.
SELECT id,
       table_name,
       op,
       {body}::text
  FROM cdc.change
 WHERE id > %(after)s
 ORDER BY id
 LIMIT %(limit)s
