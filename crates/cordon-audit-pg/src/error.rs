//! Errors. Messages name the store (URL without password, schema, chain) and what failed; they
//! never carry row contents: PostgreSQL's `DETAIL` (which can quote a failing row) and `HINT`
//! are dropped, only severity, SQLSTATE and the primary message are kept.

/// Why opening, migrating or verifying a PostgreSQL audit store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    /// A database operation failed. `cause` is sanitized (see [`describe_pg_error`]).
    #[error("audit store {store}: {op} failed: {cause}")]
    Db {
        store: String,
        op: &'static str,
        /// SQLSTATE, when the server answered with an error.
        code: Option<String>,
        cause: String,
    },
    /// No connection could be obtained from the pool.
    #[error("audit store {store}: cannot connect: {cause}")]
    Connect { store: String, cause: String },
    /// The store URL or connection string is malformed. Never quotes the URL (it may hold a
    /// password).
    #[error("invalid audit store URL: {0}")]
    Url(String),
    /// The TLS client for the store could not be set up (e.g. an unreadable `sslrootcert`).
    #[error("audit store TLS: {0}")]
    Tls(String),
    /// A schema, role or chain id that is not a plain identifier.
    #[error("invalid {what}: {why}")]
    InvalidInput { what: &'static str, why: &'static str },
    /// The stored chain head does not hash to what it claims; the writer refuses to extend it.
    #[error(
        "audit store {store}: chain {chain_id} head at index {index} is damaged ({why}); run `cordon audit verify`"
    )]
    CorruptHead {
        store: String,
        chain_id: String,
        index: u64,
        why: &'static str,
    },
    /// Another writer (another gateway with the same chain id) holds the chain's lock.
    #[error(
        "audit store {store}: chain {chain_id} is locked by another writer (another gateway with the same chain id, or this gateway's own store before a reload changed its URL: restart to apply); one writer per chain"
    )]
    ChainInUse { store: String, chain_id: String },
    /// The chain's checkpoints forbid writing: another key signs it, or a checkpoint (in the
    /// table or published) covers more records than the chain holds.
    #[error("audit store {store}: {why}; run `cordon audit verify`")]
    Checkpoint {
        store: String,
        chain_id: String,
        why: String,
    },
}

impl PgError {
    /// The SQLSTATE of a database error (e.g. `42501` insufficient privilege).
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Db { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The message without the store prefix (for errors that name the store themselves).
    pub fn cause(&self) -> String {
        match self {
            PgError::Db { op, cause, .. } => format!("{op} failed: {cause}"),
            PgError::Connect { cause, .. } => format!("cannot connect: {cause}"),
            PgError::CorruptHead {
                chain_id, index, why, ..
            } => format!("chain {chain_id} head at index {index} is damaged ({why})"),
            PgError::Checkpoint { chain_id, why, .. } => format!("chain {chain_id}: {why}"),
            PgError::ChainInUse { chain_id, .. } => {
                format!("chain {chain_id} is locked by another writer")
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn db(store: &str, op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let store = store.to_string();
        move |e| PgError::Db {
            store,
            op,
            code: e.code().map(|c| c.code().to_string()),
            cause: describe_pg_error(&e),
        }
    }
}

/// A PostgreSQL error without `DETAIL`/`HINT`/`WHERE` (they can quote row values): for a server
/// error `"<severity> <SQLSTATE>: <message>"`, otherwise the client-side error.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        // Not from the server (I/O, TLS, protocol): its causes carry no row data, and say why
        // (e.g. the TLS handshake's "invalid peer certificate: UnknownIssuer").
        None => {
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                out.push_str(": ");
                out.push_str(&cause.to_string());
                source = cause.source();
            }
            out
        }
    }
}
