-- The fleet schema: devices and their tokens, events keyed per device, bundles, rollouts.
-- Times are Unix seconds. The same schema as migrations/postgresql, in SQLite's types.

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    revoked REAL,
    last_seen REAL,
    bundle_id TEXT,
    fps REAL,
    unknown_rate REAL,
    errors INTEGER,
    outbox_backlog INTEGER,
    health_at REAL
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('device', 'admin')),
    device TEXT REFERENCES devices (id),
    name TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL,
    CHECK ((role = 'device') = (device IS NOT NULL))
);

CREATE TABLE events (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (device, id)
);

-- one row per counter and server process, summed when read: no hot row shared by workers
CREATE TABLE counters (
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, shard)
);

CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    added REAL NOT NULL
);

CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle TEXT NOT NULL REFERENCES bundles (id),
    grp TEXT,
    percent INTEGER CHECK (percent BETWEEN 0 AND 100),
    state TEXT NOT NULL CHECK (state IN ('active', 'promoted', 'rolled_back')),
    min_fps REAL,
    max_unknown_rate REAL,
    max_errors INTEGER,
    started REAL NOT NULL,
    ended REAL,
    reason TEXT NOT NULL DEFAULT ''
);

-- at most one rollout in progress at a time
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (state) WHERE state = 'active';
