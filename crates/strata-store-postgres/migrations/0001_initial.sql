-- Strata metadata, schema version 1. Applied once, in one transaction, by
-- `PostgresMetadataStore::connect` (see src/persistence.rs, `migrate`).

-- One row per snapshot. The record is the serialized `SnapshotRecord`; the id and owner
-- are columns too, for the primary key and listings by owner.
CREATE TABLE snapshots (
    id     text  PRIMARY KEY,
    owner  text  NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX snapshots_by_owner ON snapshots (owner, id);

-- Client tokens of StartSnapshot: unique per owner and token.
CREATE TABLE client_tokens (
    owner    text NOT NULL,
    token    text NOT NULL,
    snapshot text NOT NULL,
    PRIMARY KEY (owner, token)
);
CREATE INDEX client_tokens_by_snapshot ON client_tokens (snapshot);

-- Recorded block writes of pending snapshots: (snapshot, index) -> chunk digest.
CREATE TABLE pending_writes (
    snapshot    text   NOT NULL,
    block_index bigint NOT NULL,
    digest      bytea  NOT NULL,
    PRIMARY KEY (snapshot, block_index)
);

-- Block-map tree nodes by hash, with the stamp of their last write (seal).
CREATE TABLE nodes (
    hash  bytea  PRIMARY KEY,
    stamp bigint NOT NULL,
    bytes bytea  NOT NULL
);

-- The stamps (`ports::Stamp`) the store issues to seals and GC views.
CREATE SEQUENCE strata_stamps;
