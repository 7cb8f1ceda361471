-- The next batch of unpublished changes after a cursor, in id order, with the message
-- body already encoded as JSON text (the session runs with TimeZone = UTC, so
-- captured_at reads as ISO 8601 with a +00:00 offset).
SELECT id,
       table_name,
       op,
       json_build_object(
           'id', id,
           'table', table_name,
           'op', op,
           'pk', pk,
           'before', before,
           'after', after,
           'txid', txid,
           'captured_at', captured_at
       )::text
  FROM cdc.change
 WHERE id > %(after)s
 ORDER BY id
 LIMIT %(limit)s
