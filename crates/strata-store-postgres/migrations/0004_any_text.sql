-- Strata metadata, schema version 4: snapshot records as JSON text, not jsonb, and
-- client tokens as bytes.
--
-- jsonb refuses the escape \u0000, and a description or tag may hold any character the
-- model allows (`[\S\s]*`), NUL included: such a StartSnapshot failed with a storage
-- error. The record is only ever stored and read back whole (no JSON operators), so text
-- loses nothing. Existing records convert as they are.
ALTER TABLE snapshots ALTER COLUMN record TYPE text USING record::text;

-- A text column cannot hold NUL at all; the client token is the user's string: its UTF-8
-- bytes.
ALTER TABLE client_tokens ALTER COLUMN token TYPE bytea USING convert_to(token, 'UTF8');
