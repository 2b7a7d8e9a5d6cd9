//! The schema, the writer role and the append-only fences, created by [`migrate`].

use crate::error::PgError;
use crate::url::checked_ident;

/// The role the gateway writes as (connect as a member of it and `SET ROLE`, see
/// [`crate::PgStoreOptions::role`]). Granted `USAGE` on the schema and only `SELECT, INSERT` on
/// its tables: no `UPDATE`, `DELETE` or `TRUNCATE`.
pub const WRITER_ROLE: &str = "cordon_writer";

/// Message prefix of the exception the append-only triggers raise (SQLSTATE `P0001`).
pub const APPEND_ONLY_MESSAGE: &str = "cordon audit log is append-only";

/// Create (or bring up to date) the store in `schema`, with [`WRITER_ROLE`] as the writer role.
/// Idempotent; run it as the schema owner (an administrator), not as the gateway. See
/// [`migrate_with_role`].
pub async fn migrate(admin: &tokio_postgres::Client, schema: &str) -> Result<(), PgError> {
    migrate_with_role(admin, schema, WRITER_ROLE).await
}

/// Create (or bring up to date) the store in `schema`:
///
/// - `records(chain_id, idx, body, entry_hash, leaf_hash, inserted_at)`, primary key
///   `(chain_id, idx)`: one hash chain per gateway replica;
/// - `checkpoints(chain_id, tree_size, root_hash, entry_hash, note, created_at)`, primary key
///   `(chain_id, tree_size)`: chain heads (RFC 6962 root of the chain's first `tree_size` leaves
///   and the entry hash of record `tree_size - 1`) and, when the writer signs checkpoints, the
///   signed C2SP checkpoint note; checked by [`crate::verify`];
/// - `chain_keys(chain_id, vkey, created_at)`: the checkpoint verifier key of each chain, written
///   once by its writer (a chain is never signed by two keys);
/// - `markers(chain_id, seq, note, created_at)`, primary key `(chain_id, seq)`: each chain's
///   signed close and open markers (`cordon_audit::marker`), so rows inserted while its writer
///   was stopped cleanly are named forged, not adopted;
/// - the role `writer_role` (created `NOLOGIN` if missing; grant it to the gateway's login role),
///   with `USAGE` on the schema and `SELECT, INSERT` on the four tables, nothing else (any other grant
///   of it on these tables is revoked);
/// - as a second fence, triggers on every table raising [`APPEND_ONLY_MESSAGE`] on any `UPDATE`,
///   `DELETE` (row level) or `TRUNCATE` (statement level), whoever runs it.
///
/// Runs in one transaction under a cluster-wide advisory lock, so concurrent migrations (several
/// replicas starting at once) do not race on `CREATE ROLE` / `CREATE TABLE`. Needs PostgreSQL 14+
/// (`CREATE OR REPLACE TRIGGER`).
pub async fn migrate_with_role(
    admin: &tokio_postgres::Client,
    schema: &str,
    writer_role: &str,
) -> Result<(), PgError> {
    let s = checked_ident("schema", schema)?;
    let r = checked_ident("role", writer_role)?;
    let sql = format!(
        r#"
BEGIN;
SELECT pg_advisory_xact_lock(7243513358117101663);
DO $do$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{r}') THEN
    CREATE ROLE "{r}" NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $do$;
CREATE SCHEMA IF NOT EXISTS "{s}";
CREATE TABLE IF NOT EXISTS "{s}".records (
  chain_id    text        NOT NULL,
  idx         bigint      NOT NULL CHECK (idx >= 0),
  body        bytea       NOT NULL,
  entry_hash  bytea       NOT NULL CHECK (length(entry_hash) = 32),
  leaf_hash   bytea       NOT NULL CHECK (length(leaf_hash) = 32),
  inserted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (chain_id, idx)
);
CREATE TABLE IF NOT EXISTS "{s}".checkpoints (
  chain_id   text        NOT NULL,
  tree_size  bigint      NOT NULL CHECK (tree_size > 0),
  root_hash  bytea       NOT NULL CHECK (length(root_hash) = 32),
  entry_hash bytea       NOT NULL CHECK (length(entry_hash) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (chain_id, tree_size)
);
ALTER TABLE "{s}".checkpoints ADD COLUMN IF NOT EXISTS note text;
CREATE TABLE IF NOT EXISTS "{s}".chain_keys (
  chain_id   text        PRIMARY KEY,
  vkey       text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS "{s}".markers (
  chain_id   text        NOT NULL,
  seq        bigint      NOT NULL CHECK (seq > 0),
  note       text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (chain_id, seq)
);
CREATE OR REPLACE FUNCTION "{s}".cordon_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION '{msg}: % on %.% is not allowed', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'P0001';
END
$fn$;
REVOKE ALL ON FUNCTION "{s}".cordon_append_only() FROM PUBLIC;
CREATE OR REPLACE TRIGGER cordon_no_update_delete BEFORE UPDATE OR DELETE ON "{s}".records
  FOR EACH ROW EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_truncate BEFORE TRUNCATE ON "{s}".records
  FOR EACH STATEMENT EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_update_delete BEFORE UPDATE OR DELETE ON "{s}".checkpoints
  FOR EACH ROW EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_truncate BEFORE TRUNCATE ON "{s}".checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_update_delete BEFORE UPDATE OR DELETE ON "{s}".chain_keys
  FOR EACH ROW EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_truncate BEFORE TRUNCATE ON "{s}".chain_keys
  FOR EACH STATEMENT EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_update_delete BEFORE UPDATE OR DELETE ON "{s}".markers
  FOR EACH ROW EXECUTE FUNCTION "{s}".cordon_append_only();
CREATE OR REPLACE TRIGGER cordon_no_truncate BEFORE TRUNCATE ON "{s}".markers
  FOR EACH STATEMENT EXECUTE FUNCTION "{s}".cordon_append_only();
REVOKE ALL ON "{s}".records, "{s}".checkpoints, "{s}".chain_keys, "{s}".markers FROM PUBLIC;
REVOKE ALL ON "{s}".records, "{s}".checkpoints, "{s}".chain_keys, "{s}".markers FROM "{r}";
GRANT USAGE ON SCHEMA "{s}" TO "{r}";
GRANT SELECT, INSERT ON "{s}".records, "{s}".checkpoints, "{s}".chain_keys, "{s}".markers TO "{r}";
COMMIT;
"#,
        msg = APPEND_ONLY_MESSAGE,
    );
    let store = format!("schema {s}");
    let res = admin.batch_execute(&sql).await;
    if res.is_err() {
        // Leave the session usable if the failure happened inside the transaction.
        let _ = admin.batch_execute("ROLLBACK").await;
    }
    res.map_err(PgError::db(&store, "migrate"))
}
