-- What an operator (and the metrics) want to know: backlog, lag, doorbell, leader.
SELECT (SELECT count(*) FROM cdc.change) AS backlog,
       (SELECT extract(epoch FROM clock_timestamp() - min(captured_at))
          FROM cdc.change) AS oldest_age,
       (SELECT armed FROM cdc.doorbell) AS armed,
       (SELECT a.application_name
          FROM pg_locks l
          JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = 0 AND l.objid = %(lock_key)s AND l.objsubid = 1
         LIMIT 1) AS leader
