-- Strata metadata, schema version 6: CompleteSnapshot in bounded memory.

-- Subtrees a CompleteSnapshot stored ahead of its seal (`MetadataStore::stage_nodes`):
-- GC keeps every node under them while the snapshot is pending; the seal, a deletion or
-- a drop of the snapshot's pending writes removes its rows.
CREATE TABLE staged_roots (
    snapshot text  NOT NULL,
    root     bytea NOT NULL,
    PRIMARY KEY (snapshot, root)
);
