-- Times are BIGINT microseconds since the Unix epoch (UTC) in both dialects, so the shared
-- queries compare plain integers. JSON values are TEXT: the payload is kept as the exact bytes
-- that are sent, and nothing queries inside the other JSON columns.

CREATE TABLE api_token (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    app_id      TEXT,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE application (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    uid         TEXT,
    name        TEXT NOT NULL,
    rate_limit  INTEGER,
    metadata    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX application_uid ON application (org_id, uid) WHERE uid IS NOT NULL;
CREATE INDEX application_org ON application (org_id, id);

CREATE TABLE endpoint (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL,
    app_id       TEXT NOT NULL REFERENCES application (id) ON DELETE CASCADE,
    uid          TEXT,
    url          TEXT NOT NULL,
    description  TEXT NOT NULL,
    rate_limit   INTEGER,
    disabled     BOOLEAN NOT NULL,
    event_types  TEXT,
    channels     TEXT,
    secrets      TEXT NOT NULL,
    headers      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX endpoint_uid ON endpoint (app_id, uid) WHERE uid IS NOT NULL;
CREATE INDEX endpoint_app ON endpoint (app_id, id);

CREATE TABLE event_type (
    org_id        TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    archived      BOOLEAN NOT NULL,
    deprecated    BOOLEAN NOT NULL,
    feature_flag  TEXT,
    schemas       TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE message (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    app_id      TEXT NOT NULL REFERENCES application (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    event_id    TEXT,
    payload     TEXT NOT NULL,
    channels    TEXT,
    tags        TEXT,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX message_event_id ON message (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX message_app ON message (app_id, id);

CREATE TABLE delivery (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    msg_id           TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    trigger          INTEGER NOT NULL,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    leased_by        TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (msg_id, endpoint_id)
);
CREATE INDEX delivery_due ON delivery (next_attempt_at) WHERE state = 'pending';
CREATE INDEX delivery_lease ON delivery (lease_until) WHERE state = 'sending';
CREATE INDEX delivery_endpoint ON delivery (endpoint_id, state);

CREATE TABLE attempt (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    msg_id           TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES endpoint (id) ON DELETE CASCADE,
    delivery_id      TEXT NOT NULL,
    url              TEXT NOT NULL,
    status           INTEGER NOT NULL,
    response_status  INTEGER NOT NULL,
    response_body    TEXT NOT NULL,
    request_headers  TEXT NOT NULL,
    failure_class    TEXT,
    failure_message  TEXT,
    duration_ms      INTEGER NOT NULL,
    trigger          INTEGER NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, id);
CREATE INDEX attempt_message ON attempt (msg_id, id);

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    status_code  INTEGER,
    body         TEXT,
    created_at   BIGINT NOT NULL
);
