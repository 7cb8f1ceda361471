-- A small sample inventory for the local run. Idempotent: running it again adds nothing.
INSERT INTO hardware_type (name, vendor, model) VALUES
    ('r650', 'Dell', 'PowerEdge R650'),
    ('dl360', 'HPE', 'ProLiant DL360 Gen10'),
    ('nuc', 'Intel', 'NUC 12 Pro')
ON CONFLICT (name) DO NOTHING;

INSERT INTO subnet (name, network, gateway, domain_name, dns_servers, pool_start, pool_end, lease_time) VALUES
    ('office', '10.77.0.0/24', '10.77.0.1', 'office.example.org', '{10.77.0.2,10.77.0.3}',
     '10.77.0.100', '10.77.0.199', 3600),
    ('servers', '10.77.1.0/24', '10.77.1.1', 'srv.example.org', '{10.77.0.2}', NULL, NULL, 86400),
    ('mgmt', '10.77.2.0/24', '10.77.2.1', 'mgmt.example.org', '{10.77.0.2}', NULL, NULL, 86400)
ON CONFLICT (name) DO NOTHING;

INSERT INTO service (name) VALUES ('http'), ('postgres'), ('dns'), ('ntp')
ON CONFLICT (name) DO NOTHING;

INSERT INTO host (hostname, hardware_type_id, description)
SELECT h.hostname, (SELECT id FROM hardware_type WHERE name = h.hw), h.description
FROM (VALUES
    ('web1', 'r650', 'front end'), ('web2', 'r650', 'front end'),
    ('db1', 'dl360', 'primary database'), ('db2', 'dl360', 'replica'),
    ('ns1', 'nuc', 'resolver'), ('printer-2f', NULL, 'second floor printer'),
    ('kiosk1', 'nuc', 'lobby kiosk')
) AS h(hostname, hw, description)
WHERE NOT EXISTS (SELECT 1 FROM host WHERE lower(host.hostname) = lower(h.hostname));

INSERT INTO interface (host_id, name, mac, ip)
SELECT (SELECT id FROM host WHERE hostname = i.hostname), i.name, i.mac::macaddr, i.ip::inet
FROM (VALUES
    ('web1', 'eth0', '52:54:00:77:01:01', '10.77.1.11'), ('web1', 'ipmi', '52:54:00:77:02:01', '10.77.2.11'),
    ('web2', 'eth0', '52:54:00:77:01:02', '10.77.1.12'), ('web2', 'ipmi', '52:54:00:77:02:02', '10.77.2.12'),
    ('db1', 'eth0', '52:54:00:77:01:03', '10.77.1.21'), ('db1', 'ipmi', '52:54:00:77:02:03', '10.77.2.21'),
    ('db2', 'eth0', '52:54:00:77:01:04', '10.77.1.22'),
    ('ns1', 'eth0', '52:54:00:77:00:02', '10.77.0.2'),
    ('printer-2f', 'eth0', '52:54:00:77:00:50', '10.77.0.50'),
    ('kiosk1', 'wlan0', '52:54:00:77:00:60', NULL)
) AS i(hostname, name, mac, ip)
ON CONFLICT DO NOTHING;

INSERT INTO host_service (host_id, service_id)
SELECT h.id, s.id FROM (VALUES ('web1', 'http'), ('web2', 'http'), ('db1', 'postgres'),
                               ('db2', 'postgres'), ('ns1', 'dns'), ('ns1', 'ntp')) AS x(hostname, service)
JOIN host h ON h.hostname = x.hostname JOIN service s ON s.name = x.service
ON CONFLICT DO NOTHING;
