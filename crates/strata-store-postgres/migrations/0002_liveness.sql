-- Strata metadata, schema version 2: what ADR 0004 moves into the metadata store.

-- Puts in flight (MetadataStore::announce_put). Not history: a row lives from the
-- announcement to its withdrawal, or lapses at `expires_at` if its node died.
CREATE TABLE announcements (
    id         bigserial   PRIMARY KEY,
    digest     bytea       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX announcements_by_expiry ON announcements (expires_at);

-- Leases of background work (MetadataStore::acquire_lease): one holder per name until
-- `expires_at`, by the database's clock.
CREATE TABLE leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Cluster secrets (MetadataStore::secret): the first value stored for a name wins.
CREATE TABLE secrets (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
