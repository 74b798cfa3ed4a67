-- Strata metadata, schema version 3: the chunk registry of ADR 0004.

-- Chunks known to be stored: written (size) or re-used by the write record stamped
-- `stamp` last. GC condemns only chunks stamped before its view.
CREATE TABLE chunks (
    digest bytea  PRIMARY KEY,
    size   bigint NOT NULL,
    stamp  bigint NOT NULL
);

-- Tombstones of chunks being deleted: condemned, their objects not yet all deleted.
CREATE TABLE condemned_chunks (
    digest bytea PRIMARY KEY
);

-- Condemnations look announcements up by digest.
CREATE INDEX announcements_by_digest ON announcements (digest);
