-- The fleet schema: devices and their tokens, events keyed per device, bundles, rollouts.
-- Times are Unix seconds (double precision), as the SQLite schema keeps them.

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL DEFAULT '',
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION,
    last_seen DOUBLE PRECISION,
    bundle_id TEXT,
    fps DOUBLE PRECISION,
    unknown_rate DOUBLE PRECISION,
    errors BIGINT,
    outbox_backlog BIGINT,
    health_at DOUBLE PRECISION
);

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('device', 'admin')),
    device TEXT REFERENCES devices (id),
    name TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION,
    CHECK ((role = 'device') = (device IS NOT NULL))
);

CREATE TABLE events (
    device TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, id)
);

-- one row per counter and server process, summed when read: no hot row shared by workers
CREATE TABLE counters (
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name, shard)
);

CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    added DOUBLE PRECISION NOT NULL
);

CREATE TABLE rollouts (
    id BIGSERIAL PRIMARY KEY,
    bundle TEXT NOT NULL REFERENCES bundles (id),
    grp TEXT,
    percent INTEGER CHECK (percent BETWEEN 0 AND 100),
    state TEXT NOT NULL CHECK (state IN ('active', 'promoted', 'rolled_back')),
    min_fps DOUBLE PRECISION,
    max_unknown_rate DOUBLE PRECISION,
    max_errors BIGINT,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    reason TEXT NOT NULL DEFAULT ''
);

-- at most one rollout in progress at a time
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (state) WHERE state = 'active';
