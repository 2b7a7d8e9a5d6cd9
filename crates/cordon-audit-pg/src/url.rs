//! Store URLs: `postgres://user[:password]@host[:port]/dbname?schema=S[&role=R][&chain=C][&...]`.
//!
//! `schema`, `role` and `chain` are Cordon's, and so are `sslmode` and `sslrootcert` (see
//! [`Tls`]); every other query parameter (`connect_timeout`, `application_name`, ...) goes to
//! tokio-postgres unchanged. Nothing here ever quotes the URL back (it may hold a password): use
//! [`StoreUrl::redacted`] / [`redact_config`].
//!
//! TLS (`sslmode`): `disable` is plaintext. `require`, `verify-ca` and `verify-full` all mean TLS
//! with the server's certificate AND host name checked (against the platform's roots, or the
//! PEM file `sslrootcert=FILE`): stricter than libpq's `require`, which checks neither. Unset or
//! `prefer`: TLS as above for a host off the machine, plaintext for a Unix socket, `localhost`
//! or a loopback address. So audit records never cross a network in the clear unless the URL
//! says `sslmode=disable`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::PgError;

/// The schema used when a URL names none.
pub const DEFAULT_SCHEMA: &str = "cordon_audit";

/// A parsed store URL.
#[derive(Clone)]
pub struct StoreUrl {
    /// Connection settings (the password, if any, stays in here).
    pub config: tokio_postgres::Config,
    /// Schema holding `records` and `checkpoints` ([`DEFAULT_SCHEMA`] when not given).
    pub schema: String,
    /// Role to `SET ROLE` to after connecting (e.g. `cordon_writer`), if given.
    pub role: Option<String>,
    /// Chain id (the replica id) for a writer, if given.
    pub chain_id: Option<String>,
    /// How the connection is protected (see the module docs).
    pub tls: Tls,
}

/// TLS for a PostgreSQL connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext (`sslmode=disable`, or a connection that stays on the machine).
    Off,
    /// TLS, the certificate chain and host name verified against `root_cert` (a PEM file) or,
    /// when `None`, the platform's trust store.
    Verify { root_cert: Option<PathBuf> },
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl StoreUrl {
    /// `postgres://user@host:port/db?schema=S`, never the password.
    pub fn redacted(&self) -> String {
        format!("{}?schema={}", redact_config(&self.config), self.schema)
    }
}

/// Parse a `postgres://` / `postgresql://` store URL (see the module docs).
pub fn parse_store_url(s: &str) -> Result<StoreUrl, PgError> {
    let rest = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
        .ok_or_else(|| PgError::Url("expected a postgres:// or postgresql:// URL".into()))?;
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut schema = None;
    let mut role = None;
    let mut chain_id = None;
    let mut sslmode = None;
    let mut root_cert = None;
    let mut passthrough = Vec::new();
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "schema" => schema = Some(checked_ident("schema", v)?.to_string()),
            "role" => role = Some(checked_ident("role", v)?.to_string()),
            "chain" | "chain_id" => chain_id = Some(checked_chain_id(v)?.to_string()),
            "sslmode" => sslmode = Some(v),
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(v)?)),
            _ => passthrough.push(pair),
        }
    }
    let mut url = format!("postgresql://{base}");
    if !passthrough.is_empty() {
        url.push('?');
        url.push_str(&passthrough.join("&"));
    }
    // tokio-postgres' message can quote the offending parameter value; keep it out.
    let mut config = tokio_postgres::Config::from_str(&url)
        .map_err(|_| PgError::Url("not a valid PostgreSQL connection URL".into()))?;
    let tls = match sslmode {
        Some("disable") => Tls::Off,
        Some("require" | "verify-ca" | "verify-full") => Tls::Verify { root_cert },
        // A root certificate given is a request for TLS, on the machine too.
        None | Some("prefer") if root_cert.is_some() => Tls::Verify { root_cert },
        None | Some("prefer") if stays_on_this_machine(&config) => Tls::Off,
        None | Some("prefer") => Tls::Verify { root_cert },
        Some(_) => {
            return Err(PgError::Url(
                "sslmode must be disable, prefer, require, verify-ca or verify-full".into(),
            ));
        }
    };
    crate::tls::apply(&mut config, &tls);
    Ok(StoreUrl {
        config,
        schema: schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string()),
        role,
        chain_id,
        tls,
    })
}

/// `%XX` escapes of a query value (a file path may hold `/` as `%2F`).
fn percent_decode(v: &str) -> Result<String, PgError> {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PgError::Url("sslrootcert: not UTF-8 once decoded".into()))
}

impl Tls {
    /// The TLS a connection string with no Cordon parameters gets, by the same rule as a store
    /// URL: `disable` is off; `require` is on; `prefer` (tokio-postgres' default) is on unless
    /// every address stays on this machine. So a `Config` built elsewhere never loses the TLS its
    /// `sslmode` asked for.
    pub fn for_config(c: &tokio_postgres::Config) -> Tls {
        match c.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Tls::Off,
            tokio_postgres::config::SslMode::Prefer if stays_on_this_machine(c) => Tls::Off,
            _ => Tls::Verify { root_cert: None },
        }
    }
}

/// Does every address the connection may go to stay on this machine (a Unix socket, `localhost`,
/// a loopback address)? `hostaddr`, when given, is where it goes; `host` then only names the
/// server.
fn stays_on_this_machine(c: &tokio_postgres::Config) -> bool {
    if !c.get_hostaddrs().is_empty() {
        return c.get_hostaddrs().iter().all(|a| a.is_loopback());
    }
    c.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// `postgres://user@host:port/db` from a config, without the password.
pub fn redact_config(c: &tokio_postgres::Config) -> String {
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    let db = c.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// A PostgreSQL identifier Cordon will interpolate (quoted) into SQL: `[a-z_][a-z0-9_]{0,62}`.
pub(crate) fn checked_ident<'a>(what: &'static str, s: &'a str) -> Result<&'a str, PgError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
    if ok {
        Ok(s)
    } else {
        Err(PgError::InvalidInput {
            what,
            why: "must be 1-63 characters of a-z, 0-9 and _, not starting with a digit",
        })
    }
}

/// A chain id (replica id): 1-128 characters of `A-Za-z0-9._:-`.
/// A chain id: 1-128 of `A-Z a-z 0-9 . _ : -`, starting with a letter or digit. It names a
/// directory under a checkpoint publication target and the key directory, so never `.`, `..` or a
/// hidden name.
pub fn checked_chain_id(s: &str) -> Result<&str, PgError> {
    let ok = s.len() <= 128
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(s)
    } else {
        Err(PgError::InvalidInput {
            what: "chain id",
            why: "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-', starting with a letter or digit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cordon_params_and_passes_the_rest() {
        let u = parse_store_url(
            "postgres://gw:s3cret@db.internal:6543/audit?schema=eu_audit&role=cordon_writer&chain=gw-fra-1-a&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(u.schema, "eu_audit");
        assert_eq!(u.role.as_deref(), Some("cordon_writer"));
        assert_eq!(u.chain_id.as_deref(), Some("gw-fra-1-a"));
        assert_eq!(u.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        let shown = u.redacted();
        assert_eq!(shown, "postgres://gw@db.internal:6543/audit?schema=eu_audit");
        assert!(!format!("{u:?}").contains("s3cret"));

        let d = parse_store_url("postgresql://localhost/test").unwrap();
        assert_eq!(d.schema, DEFAULT_SCHEMA);
        assert_eq!(d.role, None);
    }

    #[test]
    fn tls_is_on_off_the_machine_unless_plaintext_is_asked_for() {
        let tls = |u: &str| parse_store_url(u).unwrap_or_else(|e| panic!("{u}: {e}")).tls;
        let verify = |root: Option<&str>| Tls::Verify {
            root_cert: root.map(PathBuf::from),
        };
        for local in [
            "postgres://u@localhost/db",
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@[::1]/db?sslmode=prefer",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://u@db.internal/db?hostaddr=127.0.0.1",
            "postgres://u@db.internal/db?sslmode=disable",
        ] {
            assert_eq!(tls(local), Tls::Off, "{local}");
        }
        for remote in [
            "postgres://u@db.internal/db",
            "postgres://u@10.0.0.5/db?sslmode=prefer",
            "postgres://u@localhost/db?hostaddr=10.0.0.5",
            "postgres://u@localhost/db?sslmode=require",
            "postgres://u@db.internal/db?sslmode=verify-full",
        ] {
            assert_eq!(tls(remote), verify(None), "{remote}");
        }
        assert_eq!(
            tls("postgres://u@db.internal/db?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem"),
            verify(Some("/etc/ca.pem"))
        );
        assert_eq!(
            tls("postgres://u@localhost/db?sslrootcert=%2Fetc%2Fca.pem"),
            verify(Some("/etc/ca.pem"))
        );
        // A connection string built elsewhere keeps what its sslmode asked for.
        let cfg = |s: &str| tokio_postgres::Config::from_str(s).unwrap();
        assert_eq!(
            Tls::for_config(&cfg("host=db.internal sslmode=require")),
            verify(None)
        );
        assert_eq!(Tls::for_config(&cfg("host=db.internal")), verify(None));
        assert_eq!(Tls::for_config(&cfg("host=127.0.0.1")), Tls::Off);
        assert_eq!(
            Tls::for_config(&cfg("host=localhost sslmode=require")),
            verify(None)
        );
        assert_eq!(
            Tls::for_config(&cfg("host=db.internal sslmode=disable")),
            Tls::Off
        );
        // What tokio-postgres is told: TLS required, or none at all; never `prefer`.
        let u = parse_store_url("postgres://u@db.internal/db").unwrap();
        assert_eq!(u.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let u = parse_store_url("postgres://u@localhost/db").unwrap();
        assert_eq!(u.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        assert!(
            parse_store_url("postgres://u:pw-secret@h/db?sslmode=allow")
                .is_err_and(|e| !e.to_string().contains("pw-secret"))
        );
    }

    #[test]
    fn rejects_bad_urls_without_quoting_them() {
        for bad in [
            "mysql://u:pw-secret@h/db",
            "postgres://u:pw-secret@h/db?schema=Bad-Name",
            "postgres://u:pw-secret@h/db?schema=x;drop",
            "postgres://u:pw-secret@h/db?role=a%20b",
            "postgres://u:pw-secret@h/db?chain=a%20b",
            "postgres://u:pw-secret@h:notaport/db",
        ] {
            let e = parse_store_url(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(!e.to_string().contains("pw-secret"), "{e}");
        }
    }
}
