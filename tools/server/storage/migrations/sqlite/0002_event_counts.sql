-- Events held per device and in all, kept as each batch is stored, so that /v1/stats,
-- /metrics and `fleet status` never count the events table.
-- depends: 0001_fleet

ALTER TABLE devices ADD COLUMN stored INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET stored = (SELECT COUNT(*) FROM events WHERE events.device = devices.id);
INSERT INTO counters (name, shard, value) SELECT 'stored', 0, COUNT(*) FROM events;
