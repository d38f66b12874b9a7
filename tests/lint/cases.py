"""The SQL case table for the compat lint: (id, sql, expected findings, options).

Expected findings are ``"severity:rule"`` strings compared as a sorted multiset.  ``BASE`` is a
deployed schema replayed before the case when ``base=True``; without it, every object the case
does not create counts as an existing, populated table of unknown shape.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = """
CREATE SCHEMA core;
CREATE TABLE core.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic varchar(50) NOT NULL,
    payload jsonb,
    status text NOT NULL DEFAULT 'pending',
    attempts int NOT NULL DEFAULT 0,
    small smallint,
    price numeric(10,2),
    code char(3),
    ts timestamp(3),
    ratio real,
    tags text[],
    "Mixed" varchar(10),
    note varchar
);
CREATE UNIQUE INDEX outbox_topic_key ON core.outbox (topic);
CREATE INDEX outbox_status_idx ON core.outbox (status);
ALTER TABLE core.outbox ADD CONSTRAINT outbox_attempts_check CHECK (attempts >= 0);
ALTER TABLE core.outbox ADD CONSTRAINT outbox_topic_status_key UNIQUE (topic, status);
CREATE TABLE core.workers (id uuid PRIMARY KEY, state text);
CREATE TYPE core.mood AS ENUM ('happy', 'sad');
CREATE DOMAIN core.posint AS int CHECK (VALUE > 0);
CREATE VIEW core.v_outbox AS SELECT id FROM core.outbox;
CREATE FUNCTION core.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE SEQUENCE core.seq;
CREATE TABLE "Core"."Weird Name" (id int);
"""


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    expect: tuple[str, ...] = ()
    base: bool = False
    locking: bool = False


E, W, X = "error:", "warning:", "waived:"


def c(id_: str, sql: str, *expect: str, base: bool = False, locking: bool = False) -> Case:
    return Case(id_, sql, tuple(sorted(expect)), base, locking)


CASES: list[Case] = [
    # --- drop-table --------------------------------------------------------------------------
    c("drop-table-simple", "DROP TABLE core.outbox;", E + "drop-table"),
    c("drop-table-if-exists-unknown", "DROP TABLE IF EXISTS core.gone;", E + "drop-table"),
    c(
        "drop-table-each-object",
        "CREATE TABLE core.tmp (a int);\nDROP TABLE core.tmp, core.outbox, core.workers;",
        E + "drop-table",
        E + "drop-table",
    ),
    c("drop-table-created-same-file", "CREATE TABLE core.tmp (a int);\nDROP TABLE core.tmp;"),
    c(
        "drop-table-quoted-qualified",
        'DROP TABLE "Core"."Weird Name";',
        E + "drop-table",
        base=True,
    ),
    c("drop-table-cascade", "DROP TABLE core.outbox CASCADE;", E + "drop-table"),
    c(
        "drop-table-unqualified-search-path",
        "SET search_path TO core;\nDROP TABLE outbox;",
        E + "drop-table",
        base=True,
    ),
    c("drop-foreign-table", "DROP FOREIGN TABLE core.remote;", E + "drop-table"),
    # --- drop-column -------------------------------------------------------------------------
    c("drop-column-simple", "ALTER TABLE core.outbox DROP COLUMN payload;", E + "drop-column"),
    c(
        "drop-column-known",
        "ALTER TABLE core.outbox DROP COLUMN payload;",
        E + "drop-column",
        base=True,
    ),
    c(
        "drop-column-if-exists-absent-known-table",
        "ALTER TABLE core.outbox DROP COLUMN IF EXISTS nope;",
        base=True,
    ),
    c(
        "drop-column-if-exists-unknown-table",
        "ALTER TABLE core.x DROP COLUMN IF EXISTS nope;",
        E + "drop-column",
    ),
    c(
        "drop-column-added-same-file",
        "ALTER TABLE core.outbox ADD COLUMN tmp int;\nALTER TABLE core.outbox DROP COLUMN tmp;",
    ),
    c(
        "drop-column-new-table",
        "CREATE TABLE core.n (a int, b int);\nALTER TABLE core.n DROP COLUMN b;",
    ),
    c("drop-column-only", "ALTER TABLE ONLY core.outbox DROP COLUMN note;", E + "drop-column"),
    c(
        "drop-column-quoted",
        'ALTER TABLE core.outbox DROP COLUMN "Mixed";',
        E + "drop-column",
        base=True,
    ),
    c("drop-attribute-composite", "ALTER TYPE core.pair DROP ATTRIBUTE b;", E + "drop-column"),
    # --- alter-column-type -------------------------------------------------------------------
    c(
        "type-varchar-widen",
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar(100);",
        base=True,
    ),
    c("type-varchar-to-text", "ALTER TABLE core.outbox ALTER COLUMN topic TYPE text;", base=True),
    c(
        "type-varchar-to-unbounded",
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar;",
        base=True,
    ),
    c(
        "type-varchar-narrow",
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar(10);",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-text-to-int",
        "ALTER TABLE core.outbox ALTER COLUMN status TYPE int USING 0;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-text-to-varchar-bounded",
        "ALTER TABLE core.outbox ALTER COLUMN status TYPE varchar(20);",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-int-to-bigint",
        "ALTER TABLE core.outbox ALTER COLUMN attempts TYPE bigint;",
        base=True,
    ),
    c(
        "type-smallint-to-int",
        "ALTER TABLE core.outbox ALTER COLUMN small TYPE integer;",
        base=True,
    ),
    c(
        "type-bigint-to-int",
        "ALTER TABLE core.outbox ALTER COLUMN id TYPE int4;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-numeric-widen",
        "ALTER TABLE core.outbox ALTER COLUMN price TYPE numeric(12,2);",
        base=True,
    ),
    c(
        "type-numeric-unconstrained",
        "ALTER TABLE core.outbox ALTER COLUMN price TYPE numeric;",
        base=True,
    ),
    c(
        "type-numeric-scale-down",
        "ALTER TABLE core.outbox ALTER COLUMN price TYPE numeric(10,1);",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-real-to-double",
        "ALTER TABLE core.outbox ALTER COLUMN ratio TYPE double precision;",
        base=True,
    ),
    c(
        "type-char-widen-not-allowlisted",
        "ALTER TABLE core.outbox ALTER COLUMN code TYPE char(5);",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-timestamp-precision",
        "ALTER TABLE core.outbox ALTER COLUMN ts TYPE timestamp(6);",
        base=True,
    ),
    c(
        "type-timestamp-to-timestamptz",
        "ALTER TABLE core.outbox ALTER COLUMN ts TYPE timestamptz;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-array-to-scalar",
        "ALTER TABLE core.outbox ALTER COLUMN tags TYPE text;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-jsonb-to-json",
        "ALTER TABLE core.outbox ALTER COLUMN payload TYPE json;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-unknown-old-type",
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE text;",
        E + "alter-column-type",
    ),
    c(
        "type-unknown-column-of-known-table",
        "ALTER TABLE core.outbox ALTER COLUMN ghost TYPE text;",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-quoted-column-widen",
        'ALTER TABLE core.outbox ALTER COLUMN "Mixed" TYPE varchar(20);',
        base=True,
    ),
    c(
        "type-unquoted-folds-to-unknown",
        "ALTER TABLE core.outbox ALTER COLUMN Mixed TYPE varchar(20);",
        E + "alter-column-type",
        base=True,
    ),
    c(
        "type-chain-in-file",
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar(80);\n"
        "ALTER TABLE core.outbox ALTER COLUMN topic TYPE text;",
        base=True,
    ),
    c(
        "type-new-column",
        "ALTER TABLE core.outbox ADD COLUMN z int;\n"
        "ALTER TABLE core.outbox ALTER COLUMN z TYPE text;",
    ),
    c("type-new-table", "CREATE TABLE core.n (a int);\nALTER TABLE core.n ALTER a TYPE text;"),
    # --- add-column-not-null -----------------------------------------------------------------
    c(
        "nn-no-default",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL;",
        E + "add-column-not-null",
    ),
    c("nn-with-default", "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL DEFAULT 0;"),
    c(
        "nn-default-null",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL DEFAULT NULL;",
        E + "add-column-not-null",
    ),
    c(
        "nn-default-null-cast",
        "ALTER TABLE core.outbox ADD COLUMN lease int DEFAULT NULL::int NOT NULL;",
        E + "add-column-not-null",
    ),
    c("nn-nullable", "ALTER TABLE core.outbox ADD COLUMN lease int;"),
    c(
        "nn-later-drop-default",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL DEFAULT 0;"
        "\nALTER TABLE core.outbox ALTER COLUMN lease DROP DEFAULT;",
        E + "add-column-not-null",
    ),
    c(
        "nn-later-set-default",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL, ALTER COLUMN lease SET DEFAULT 1;",
    ),
    c(
        "nn-later-set-not-null",
        "ALTER TABLE core.outbox ADD COLUMN lease int;\n"
        "ALTER TABLE core.outbox ALTER COLUMN lease SET NOT NULL;",
        E + "add-column-not-null",
    ),
    c(
        "nn-later-drop-not-null",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL;\n"
        "ALTER TABLE core.outbox ALTER COLUMN lease DROP NOT NULL;",
    ),
    c(
        "nn-primary-key-implies",
        "ALTER TABLE core.workers ADD COLUMN k int PRIMARY KEY;",
        E + "add-column-not-null",
        E + "add-unique",
    ),
    c(
        "nn-identity",
        "ALTER TABLE core.outbox ADD COLUMN seq bigint GENERATED BY DEFAULT AS IDENTITY;",
    ),
    c("nn-serial", "ALTER TABLE core.outbox ADD COLUMN seq bigserial;"),
    c(
        "nn-generated-stored",
        "ALTER TABLE core.outbox ADD COLUMN g int NOT NULL GENERATED ALWAYS AS (1) STORED;",
    ),
    c(
        "nn-new-table",
        "CREATE TABLE core.n (a int NOT NULL);\nALTER TABLE core.n ADD COLUMN b int NOT NULL;",
    ),
    c(
        "nn-if-not-exists-existing",
        "ALTER TABLE core.outbox ADD COLUMN IF NOT EXISTS status text NOT NULL;",
        base=True,
    ),
    c(
        "nn-set-default-null-cancels",
        "ALTER TABLE core.outbox ADD COLUMN lease int NOT NULL "
        "DEFAULT 5;\nALTER TABLE core.outbox ALTER COLUMN lease SET DEFAULT NULL;",
        E + "add-column-not-null",
    ),
    # --- add-unique --------------------------------------------------------------------------
    c(
        "unique-constraint",
        "ALTER TABLE core.outbox ADD CONSTRAINT u UNIQUE (payload);",
        E + "add-unique",
    ),
    c("unique-index", "CREATE UNIQUE INDEX u ON core.outbox (payload);", E + "add-unique"),
    c(
        "unique-index-concurrently",
        "CREATE UNIQUE INDEX CONCURRENTLY u ON core.outbox (payload);",
        E + "add-unique",
    ),
    c("unique-primary-key", "ALTER TABLE core.x ADD PRIMARY KEY (id);", E + "add-unique"),
    c(
        "unique-using-index",
        "ALTER TABLE core.outbox ADD CONSTRAINT u UNIQUE USING INDEX i;",
        E + "add-unique",
    ),
    c(
        "unique-column-constraint",
        "ALTER TABLE core.outbox ADD COLUMN k text UNIQUE;",
        E + "add-unique",
    ),
    c(
        "unique-exclusion",
        "ALTER TABLE core.outbox ADD CONSTRAINT ex EXCLUDE USING gist (id WITH =);",
        E + "add-unique",
    ),
    c(
        "unique-new-table",
        "CREATE TABLE core.n (a int);\nCREATE UNIQUE INDEX ON core.n (a);\n"
        "ALTER TABLE core.n ADD CONSTRAINT nu UNIQUE (a), ADD PRIMARY KEY (a);",
    ),
    c(
        "unique-replayed-table",
        "CREATE UNIQUE INDEX CONCURRENTLY w ON core.workers (state);",
        E + "add-unique",
        base=True,
    ),
    c("index-non-unique", "CREATE INDEX CONCURRENTLY i ON core.outbox (payload);"),
    c(
        "unique-quoted-table",
        'CREATE UNIQUE INDEX q ON "Core"."Weird Name" (id);',
        E + "add-unique",
        base=True,
    ),
    # --- renames / set schema ----------------------------------------------------------------
    c("rename-table", "ALTER TABLE core.outbox RENAME TO outbox2;", E + "rename-table"),
    c(
        "rename-column",
        "ALTER TABLE core.outbox RENAME COLUMN topic TO subject;",
        E + "rename-column",
    ),
    c(
        "rename-column-new",
        "ALTER TABLE core.outbox ADD COLUMN t int;\nALTER TABLE core.outbox RENAME COLUMN t TO u;",
    ),
    c(
        "rename-table-new",
        "CREATE TABLE core.n (a int);\nALTER TABLE core.n RENAME TO m;\n"
        "ALTER TABLE core.m RENAME COLUMN a TO b;",
    ),
    c("set-schema-table", "ALTER TABLE core.outbox SET SCHEMA archive;", E + "set-schema"),
    c("set-schema-function", "ALTER FUNCTION core.f() SET SCHEMA archive;", E + "set-schema"),
    c("rename-view", "ALTER VIEW core.v_outbox RENAME TO v2;", E + "rename-table", base=True),
    c("rename-sequence", "ALTER SEQUENCE core.seq RENAME TO seq2;", E + "rename-table"),
    c("rename-function", "ALTER FUNCTION core.f() RENAME TO g;", E + "rename-object"),
    c("rename-type", "ALTER TYPE core.mood RENAME TO feeling;", E + "rename-object"),
    c("rename-schema", "ALTER SCHEMA core RENAME TO kernel;", E + "rename-object"),
    c("rename-attribute", "ALTER TYPE core.pair RENAME ATTRIBUTE a TO b;", E + "rename-object"),
    c(
        "rename-view-column",
        "ALTER VIEW core.v_outbox RENAME COLUMN id TO ident;",
        E + "rename-column",
        base=True,
    ),
    c(
        "rename-constraint-warns",
        "ALTER TABLE core.outbox RENAME CONSTRAINT outbox_attempts_check TO c2;",
        W + "rename-constraint",
        base=True,
    ),
    c(
        "rename-index-warns",
        "ALTER INDEX core.outbox_status_idx RENAME TO s2;",
        W + "rename-constraint",
        base=True,
    ),
    # --- nullability / defaults --------------------------------------------------------------
    c(
        "set-not-null-existing",
        "ALTER TABLE core.outbox ALTER COLUMN payload SET NOT NULL;",
        E + "set-not-null",
    ),
    c(
        "set-not-null-new-table",
        "CREATE TABLE core.n (a int);\nALTER TABLE core.n ALTER COLUMN a SET NOT NULL;",
    ),
    c("set-not-null-domain", "ALTER DOMAIN core.posint SET NOT NULL;", E + "set-not-null"),
    c(
        "drop-default-existing",
        "ALTER TABLE core.outbox ALTER COLUMN status DROP DEFAULT;",
        E + "drop-default",
    ),
    c(
        "set-default-null-existing",
        "ALTER TABLE core.outbox ALTER COLUMN status SET DEFAULT NULL;",
        E + "drop-default",
    ),
    c(
        "drop-identity",
        "ALTER TABLE core.outbox ALTER COLUMN id DROP IDENTITY;",
        E + "drop-default",
    ),
    c("set-default-existing-ok", "ALTER TABLE core.outbox ALTER COLUMN status SET DEFAULT 'x';"),
    c(
        "drop-not-null-warns",
        "ALTER TABLE core.outbox ALTER COLUMN topic DROP NOT NULL;",
        W + "drop-not-null",
    ),
    # --- other drops -------------------------------------------------------------------------
    c("drop-view", "DROP VIEW core.v_outbox;", E + "drop-object"),
    c("drop-view-if-exists", "DROP VIEW IF EXISTS core.v_gone;", E + "drop-object"),
    c("drop-matview", "DROP MATERIALIZED VIEW core.mv;", E + "drop-object"),
    c("drop-function", "DROP FUNCTION core.f();", E + "drop-object"),
    c("drop-procedure", "DROP PROCEDURE core.p(int);", E + "drop-object"),
    c("drop-type", "DROP TYPE core.mood;", E + "drop-object"),
    c("drop-domain", "DROP DOMAIN core.posint;", E + "drop-object"),
    c("drop-sequence", "DROP SEQUENCE core.seq;", E + "drop-object"),
    c("drop-schema", "DROP SCHEMA core CASCADE;", E + "drop-object"),
    c("drop-extension", "DROP EXTENSION pgcrypto;", E + "drop-object"),
    c("drop-policy", "DROP POLICY p ON core.outbox;", E + "drop-object"),
    c("drop-owned", "DROP OWNED BY app;", E + "drop-object"),
    c("drop-new-view", "CREATE VIEW core.nv AS SELECT 1;\nDROP VIEW core.nv;"),
    c(
        "drop-new-function-type-seq",
        "CREATE FUNCTION core.g() RETURNS int LANGUAGE sql AS "
        "'SELECT 1';\nCREATE TYPE core.e AS ENUM ('a');\nCREATE SEQUENCE core.s2;\n"
        "DROP FUNCTION core.g();\nDROP TYPE core.e;\nDROP SEQUENCE core.s2;",
    ),
    c("drop-trigger-ignored", "DROP TRIGGER t ON core.outbox;"),
    c("drop-unique-index-warns", "DROP INDEX core.outbox_topic_key;", W + "drop-unique", base=True),
    c("drop-plain-index-ok", "DROP INDEX CONCURRENTLY core.outbox_status_idx;", base=True),
    c("drop-unknown-index-warns", "DROP INDEX core.mystery;", W + "drop-unique"),
    c(
        "drop-unique-constraint-warns",
        "ALTER TABLE core.outbox DROP CONSTRAINT outbox_topic_status_key;",
        W + "drop-unique",
        base=True,
    ),
    c(
        "drop-pkey-default-name-warns",
        "ALTER TABLE core.workers DROP CONSTRAINT workers_pkey;",
        W + "drop-unique",
        base=True,
    ),
    c(
        "drop-check-constraint-ok",
        "ALTER TABLE core.outbox DROP CONSTRAINT outbox_attempts_check;",
        base=True,
    ),
    # --- enums, RLS, privileges, data --------------------------------------------------------
    c(
        "enum-rename-value",
        "ALTER TYPE core.mood RENAME VALUE 'sad' TO 'blue';",
        E + "enum-rename-value",
    ),
    c("enum-add-value-warns", "ALTER TYPE core.mood ADD VALUE 'meh';", W + "enum-add-value"),
    c(
        "enum-new-rename-ok",
        "CREATE TYPE core.e AS ENUM ('a');\n"
        "ALTER TYPE core.e RENAME VALUE 'a' TO 'b';\nALTER TYPE core.e ADD VALUE 'c';",
    ),
    c("rls-enable", "ALTER TABLE core.outbox ENABLE ROW LEVEL SECURITY;", E + "enable-rls"),
    c("rls-force", "ALTER TABLE core.outbox FORCE ROW LEVEL SECURITY;", E + "enable-rls"),
    c("rls-disable-ok", "ALTER TABLE core.outbox DISABLE ROW LEVEL SECURITY;"),
    c(
        "rls-new-table-ok",
        "CREATE TABLE core.n (a int);\nALTER TABLE core.n ENABLE ROW LEVEL SECURITY;",
    ),
    c("revoke-table", "REVOKE SELECT ON core.outbox FROM app;", E + "revoke"),
    c("revoke-schema-all", "REVOKE ALL ON ALL TABLES IN SCHEMA core FROM app;", E + "revoke"),
    c("revoke-role", "REVOKE admin FROM app;", E + "revoke"),
    c("revoke-new-table-ok", "CREATE TABLE core.n (a int);\nREVOKE ALL ON core.n FROM PUBLIC;"),
    c("grant-ok", "GRANT SELECT ON core.outbox TO app;"),
    c("truncate-deployed", "TRUNCATE core.outbox;", E + "truncate"),
    c("truncate-new-ok", "CREATE TABLE core.n (a int);\nTRUNCATE core.n;"),
    c(
        "dml-ok",
        "INSERT INTO core.outbox (topic) VALUES ('x');\nUPDATE core.outbox SET "
        "status = 'done';\nDELETE FROM core.workers WHERE false;",
    ),
    # --- warnings: constraints, replace ------------------------------------------------------
    c(
        "add-check-warns",
        "ALTER TABLE core.outbox ADD CONSTRAINT c CHECK (attempts < 100);",
        W + "add-check",
    ),
    c(
        "add-check-not-valid-still-warns",
        "ALTER TABLE core.outbox ADD CONSTRAINT c CHECK (attempts < 100) NOT VALID;",
        W + "add-check",
    ),
    c(
        "add-fk-warns",
        "ALTER TABLE core.outbox ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES "
        "core.workers (id) NOT VALID;",
        W + "add-foreign-key",
    ),
    c(
        "add-column-references-warns",
        "ALTER TABLE core.outbox ADD COLUMN w uuid REFERENCES core.workers (id);",
        W + "add-foreign-key",
    ),
    c(
        "add-domain-check-warns",
        "ALTER DOMAIN core.posint ADD CONSTRAINT small CHECK (VALUE < 10);",
        W + "add-check",
    ),
    c(
        "replace-view-deployed",
        "CREATE OR REPLACE VIEW core.v_outbox AS SELECT id, topic FROM core.outbox;",
        W + "replace-deployed",
        base=True,
    ),
    c(
        "replace-function-deployed",
        "CREATE OR REPLACE FUNCTION core.f() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;",
        W + "replace-deployed",
        base=True,
    ),
    c(
        "replace-function-new",
        "CREATE FUNCTION core.g() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
        "CREATE OR REPLACE FUNCTION core.g() RETURNS int LANGUAGE sql AS 'SELECT 2';",
    ),
    c("create-view-new-ok", "CREATE VIEW core.v2 AS SELECT 1;"),
    c(
        "replace-unknown-function-no-baseline",
        "CREATE OR REPLACE FUNCTION core.z() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        W + "replace-deployed",
    ),
    c(
        "replace-unknown-function-with-baseline",
        "CREATE OR REPLACE FUNCTION core.z() RETURNS int "
        "LANGUAGE sql AS 'SELECT 1';\nCREATE OR REPLACE VIEW core.vz AS SELECT 1;",
        base=True,
    ),
    # --- opaque SQL and DO blocks ------------------------------------------------------------
    c(
        "do-static-drop-column",
        "DO $$\nBEGIN\n  ALTER TABLE core.outbox DROP COLUMN note;\nEND\n$$;",
        E + "drop-column",
    ),
    c(
        "do-execute-constant",
        "DO $$ BEGIN EXECUTE 'DROP TABLE core.outbox'; END $$;",
        E + "drop-table",
    ),
    c(
        "do-execute-concat-constant",
        "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'core.workers'; END $$;",
        E + "drop-table",
    ),
    c(
        "do-execute-dynamic",
        "DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'x'); END $$;",
        E + "opaque-sql",
    ),
    c(
        "do-for-in-execute-dynamic",
        "DO $$ DECLARE r record; t text := 'x'; BEGIN FOR r IN "
        "EXECUTE 'SELECT * FROM ' || t LOOP END LOOP; END $$;",
        E + "opaque-sql",
    ),
    c(
        "do-benign",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM core.outbox) THEN INSERT INTO "
        "core.outbox (topic) VALUES ('x'); END IF; END $$;",
    ),
    c(
        "do-nested-if",
        "DO $$ BEGIN IF true THEN ALTER TABLE core.outbox RENAME COLUMN topic TO "
        "t; END IF; END $$;",
        E + "rename-column",
    ),
    c(
        "do-other-language",
        "DO LANGUAGE plpython3u $$ plpy.execute('drop table x') $$;",
        E + "opaque-sql",
    ),
    c("do-unparsable-body", "DO $$ BEGIN this is not plpgsql; END $$;", E + "opaque-sql"),
    c(
        "do-tagged-dollar",
        "DO $body$ BEGIN ALTER TABLE core.outbox DROP COLUMN x; END $body$;",
        E + "drop-column",
    ),
    c(
        "do-creates-then-alters",
        "DO $$ BEGIN CREATE TABLE core.n (a int); ALTER TABLE core.n DROP COLUMN a; END $$;",
    ),
    c("call-opaque", "CALL core.migrate_data();", E + "opaque-sql"),
    c("execute-prepared-opaque", "EXECUTE stmt(1);", E + "opaque-sql"),
    # --- literals and dollar-quoted bodies are not DDL ---------------------------------------
    c(
        "function-body-ddl-text",
        "CREATE FUNCTION core.h() RETURNS void LANGUAGE plpgsql AS $$\n"
        "BEGIN\n  DROP TABLE core.outbox;\nEND\n$$;",
    ),
    c(
        "string-literal-ddl-text",
        "INSERT INTO core.outbox (topic) VALUES ('DROP TABLE "
        "core.outbox; ALTER TABLE x DROP COLUMN y');",
    ),
    c("comment-on-ddl-text", "COMMENT ON TABLE core.outbox IS 'do not DROP TABLE this';"),
    c("escape-string-ddl-text", "SELECT E'DROP TABLE core.outbox\\n-- compat: breaking';"),
    c("ddl-in-line-comment", "-- DROP TABLE core.outbox;\nSELECT 1;"),
    # --- markers -----------------------------------------------------------------------------
    c(
        "marker-waives",
        "-- compat: breaking (reason: outbox2 replaced it in 0007)\nDROP TABLE core.outbox;",
        X + "drop-table",
    ),
    c(
        "marker-at-end",
        "DROP TABLE core.outbox;\nALTER TABLE core.workers DROP COLUMN state;\n"
        "-- compat: breaking (reason: dead tables since v3)",
        X + "drop-table",
        X + "drop-column",
    ),
    c(
        "marker-between-statements",
        "DROP TABLE core.outbox;\n-- compat: breaking (reason: unused "
        "since v3)\nALTER TABLE core.workers RENAME TO w;",
        X + "drop-table",
        X + "rename-table",
    ),
    c(
        "marker-trailing-comment",
        "DROP TABLE core.outbox; -- compat: breaking (reason: gone)",
        X + "drop-table",
    ),
    c(
        "marker-extra-spaces",
        "--   compat:  breaking  ( reason:  unused since v3 )\nDROP TABLE core.outbox;",
        X + "drop-table",
    ),
    c(
        "marker-keeps-warnings",
        "-- compat: breaking (reason: rename is coordinated)\n"
        "ALTER TABLE core.outbox ALTER COLUMN topic DROP NOT NULL;\nDROP TABLE core.workers;",
        W + "drop-not-null",
        X + "drop-table",
    ),
    c(
        "marker-empty-reason",
        "-- compat: breaking (reason: )\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-placeholder-todo",
        "-- compat: breaking (reason: TODO)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-placeholder-dots",
        "-- compat: breaking (reason: ...)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-misspelt-keyword",
        "-- compt: breaking (reason: unused)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-misspelt-verb",
        "-- compat: breakin (reason: unused)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-wrong-verb",
        "-- compat: safe\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-no-reason-clause",
        "-- compat: breaking\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-uppercase",
        "-- COMPAT: BREAKING (REASON: unused)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-block-comment",
        "/* compat: breaking (reason: unused since v3) */\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        E + "drop-table",
    ),
    c(
        "marker-in-string-literal",
        "SELECT '-- compat: breaking (reason: sneaky)';\nDROP TABLE core.outbox;",
        E + "drop-table",
    ),
    c(
        "marker-in-dollar-body",
        "DO $$\nBEGIN\n-- compat: breaking (reason: sneaky)\nDROP TABLE core.outbox;\nEND $$;",
        E + "drop-table",
    ),
    c(
        "marker-unused-warns",
        "-- compat: breaking (reason: nothing to waive)\nSELECT 1;",
        W + "marker-unused",
    ),
    c(
        "ordinary-comment-compatible",
        "-- this change is backward compatible\n-- compatibility notes: none\nSELECT 1;",
    ),
    c(
        "marker-valid-and-near-miss",
        "-- compat: breaking (reason: unused since v3)\n"
        "-- compat: braking (reason: typo)\nDROP TABLE core.outbox;",
        E + "marker-invalid",
        X + "drop-table",
    ),
    # --- locking gate ------------------------------------------------------------------------
    c(
        "lock-index-no-timeout",
        "CREATE INDEX i ON core.outbox (payload);",
        E + "lock-create-index",
        E + "lock-timeout",
        locking=True,
    ),
    c(
        "lock-index-with-timeout",
        "SET lock_timeout = '5s';\nCREATE INDEX i ON core.outbox (payload);",
        E + "lock-create-index",
        locking=True,
    ),
    c(
        "lock-index-concurrently-ok",
        "CREATE INDEX CONCURRENTLY i ON core.outbox (payload);",
        locking=True,
    ),
    c(
        "lock-set-config-timeout",
        "SELECT set_config('lock_timeout', '2s', false);\n"
        "ALTER TABLE core.outbox ADD COLUMN z int;",
        locking=True,
    ),
    c(
        "lock-check-without-not-valid",
        "SET LOCAL lock_timeout = '1s';\nALTER TABLE core.outbox "
        "ADD CONSTRAINT c CHECK (attempts < 9);",
        W + "add-check",
        E + "lock-not-valid",
        locking=True,
    ),
    c(
        "lock-fk-not-valid-ok",
        "SET lock_timeout = '1s';\nALTER TABLE core.outbox ADD CONSTRAINT "
        "fk FOREIGN KEY (id) REFERENCES core.workers (id) NOT VALID;",
        W + "add-foreign-key",
        locking=True,
    ),
    c(
        "lock-rewrite-int-bigint",
        "SET lock_timeout = '1s';\nALTER TABLE core.outbox ALTER COLUMN attempts TYPE bigint;",
        E + "lock-table-rewrite",
        base=True,
        locking=True,
    ),
    c(
        "lock-varchar-widen-no-rewrite",
        "SET lock_timeout = '1s';\nALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar(200);",
        base=True,
        locking=True,
    ),
    c(
        "lock-volatile-default",
        "SET lock_timeout = '1s';\nALTER TABLE core.outbox ADD COLUMN u "
        "uuid DEFAULT gen_random_uuid();",
        E + "lock-table-rewrite",
        locking=True,
    ),
    c(
        "lock-timeout-zero-disables",
        "SET lock_timeout = 0;\nALTER TABLE core.outbox ADD COLUMN z int;",
        E + "lock-timeout",
        locking=True,
    ),
    c("lock-gate-off-by-default", "CREATE INDEX i ON core.outbox (payload);"),
    c(
        "lock-new-table-exempt",
        "CREATE TABLE core.n (a int);\nCREATE INDEX ON core.n (a);",
        locking=True,
    ),
    c(
        "lock-marker-waives-locking",
        "-- locking: accepted (reason: table has 12 rows)\n"
        "CREATE INDEX i ON core.outbox (payload);",
        X + "lock-create-index",
        X + "lock-timeout",
        locking=True,
    ),
    c(
        "lock-compat-marker-does-not-waive",
        "-- compat: breaking (reason: coordinated)\n"
        "DROP TABLE core.workers;\nCREATE INDEX i ON core.outbox (payload);",
        X + "drop-table",
        E + "lock-create-index",
        E + "lock-timeout",
        locking=True,
    ),
    c(
        "lock-marker-does-not-waive-compat",
        "-- locking: accepted (reason: tiny table)\n"
        "SET lock_timeout = '1s';\nDROP TABLE core.workers;",
        E + "drop-table",
        W + "marker-unused",
        locking=True,
    ),
    c(
        "lock-marker-near-miss",
        "-- locking: acepted (reason: tiny)\nSELECT 1;",
        E + "marker-invalid",
        locking=True,
    ),
    # --- syntax ------------------------------------------------------------------------------
    c("syntax-error", "ALTER TABLE core.outbox DROP COLUMN;", E + "syntax-error"),
    c("syntax-error-unterminated", "SELECT 'abc;", E + "syntax-error"),
    c(
        "syntax-error-marker-does-not-waive",
        "-- compat: breaking (reason: whatever)\nDROPP TABLE x;",
        E + "syntax-error",
    ),
    # --- multi-statement, several subcommands, same-file create+alter ------------------------
    c(
        "alter-several-subcommands",
        "ALTER TABLE core.outbox\n  ADD COLUMN a int,\n"
        "  DROP COLUMN note,\n  ALTER COLUMN topic TYPE varchar(10),\n  ADD CONSTRAINT u UNIQUE "
        "(a),\n  ALTER COLUMN status DROP DEFAULT;",
        E + "drop-column",
        E + "alter-column-type",
        E + "add-unique",
        E + "drop-default",
        base=True,
    ),
    c(
        "created-then-altered-same-file",
        "CREATE TABLE core.jobs (id int, name varchar(5));\n"
        "ALTER TABLE core.jobs ADD COLUMN state text NOT NULL, ALTER COLUMN name TYPE int USING 0,"
        "\n  DROP COLUMN id, ADD PRIMARY KEY (state);\nCREATE UNIQUE INDEX ON core.jobs (name);\n"
        "ALTER TABLE core.jobs RENAME COLUMN name TO title;\nALTER TABLE core.jobs ENABLE ROW "
        "LEVEL SECURITY;\nTRUNCATE core.jobs;\nDROP TABLE core.jobs;",
    ),
    c(
        "create-schema-with-elements",
        "CREATE SCHEMA app CREATE TABLE t (a int);\n"
        "ALTER TABLE app.t DROP COLUMN a;\nDROP SCHEMA app CASCADE;",
    ),
    c(
        "create-table-as-new",
        "CREATE TABLE core.snap AS SELECT * FROM core.outbox;\nDROP TABLE core.snap;",
    ),
    c("transaction-wrapped", "BEGIN;\nALTER TABLE core.outbox ADD COLUMN z int;\nCOMMIT;"),
    c(
        "mixed-good-and-bad",
        "CREATE TABLE core.n (a int);\nALTER TABLE core.outbox ADD COLUMN "
        "z int;\nALTER TABLE core.outbox RENAME COLUMN status TO state;\nCREATE INDEX CONCURRENTLY "
        "ON core.n (a);",
        E + "rename-column",
    ),
    c(
        "search-path-resolves-type",
        "SET search_path = core, public;\nALTER TABLE outbox ALTER COLUMN topic TYPE text;",
        base=True,
    ),
    c("empty-file", ""),
    c("comments-only", "-- nothing here\n/* still nothing */"),
]
