-- Strata metadata, schema version 5: encryption at rest.

-- The checksum kept with a pending write until the seal (`BlockWrite::checksum`): NULL
-- for a write without one, which is every write recorded before this version. Nullable
-- with no default, so adding it rewrites no row.
ALTER TABLE pending_writes ADD COLUMN checksum bytea;

-- Keys of the local key service (`MetadataStore::create_key`): the first stored for an
-- id wins. The record is the serialized `KeyRecord` as JSON text (not jsonb, which
-- refuses \u0000 in a description, see 0004); the owner is a column too, for listings.
CREATE TABLE kms_keys (
    id     text PRIMARY KEY,
    owner  text NOT NULL,
    record text NOT NULL
);
CREATE INDEX kms_keys_by_owner ON kms_keys (owner, id);
