-- Migration sets (ADR 0019): the ledger records spectral's own migrations and those of each
-- app directory, each set with its own numbering.
--
-- Expand/contract: the prior generation's code reads and writes `core.schema_migrations`
-- by that name with its old columns (its runner selects, inserts and creates it IF NOT
-- EXISTS; `/health` reads max(number)).  The table becomes `core.migration_ledger` with a
-- `migration_set` column and the key (migration_set, number); a view under the old name
-- shows spectral's own rows only, with the old columns, and takes the old runner's INSERTs
-- (an automatically updatable view; migration_set and applied_at get their defaults).  So
-- an app's 0001 can neither collide with spectral's 0001 nor show up in the prior
-- generation's ledger check or head.  Rename and view are one transaction: no moment without
-- the old name.
-- compat: breaking (reason: the rename is covered by a view under the old name with the old columns, spectral's rows only, insertable; the new key only adds migration_set to it)
-- locking: accepted (reason: the ledger holds one row per applied migration; only migration runners and the health probe read it)
ALTER TABLE core.schema_migrations RENAME TO migration_ledger;

ALTER TABLE core.migration_ledger
    ADD COLUMN migration_set text NOT NULL DEFAULT 'spectral',
    DROP CONSTRAINT schema_migrations_pkey,
    DROP CONSTRAINT schema_migrations_name_key,
    ADD CONSTRAINT migration_ledger_pkey PRIMARY KEY (migration_set, number),
    ADD CONSTRAINT migration_ledger_name_key UNIQUE (migration_set, name);

CREATE VIEW core.schema_migrations AS
    SELECT number, name, checksum, applied_at, duration_ms
    FROM core.migration_ledger
    WHERE migration_set = 'spectral'
    WITH LOCAL CHECK OPTION;
