//! Store URLs: `postgres://user[:password]@host[:port]/dbname?schema=S[&role=R][&chain=C][&...]`.
//!
//! `schema`, `role` and `chain` are Cordon's; every other query parameter (`connect_timeout`,
//! `application_name`, `sslmode`, ...) goes to tokio-postgres unchanged. Nothing here ever quotes
//! the URL back (it may hold a password): use [`StoreUrl::redacted`] / [`redact_config`].

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
            _ => passthrough.push(pair),
        }
    }
    let mut url = format!("postgresql://{base}");
    if !passthrough.is_empty() {
        url.push('?');
        url.push_str(&passthrough.join("&"));
    }
    // tokio-postgres' message can quote the offending parameter value; keep it out.
    let config = tokio_postgres::Config::from_str(&url)
        .map_err(|_| PgError::Url("not a valid PostgreSQL connection URL".into()))?;
    if let Some(host) = remote_without_tls(&config) {
        return Err(PgError::Url(format!(
            "{host} is not on this machine, and this build speaks to PostgreSQL without TLS: \
             connect through a Unix socket or a loopback TLS tunnel (e.g. pgbouncer or stunnel), \
             or add sslmode=disable to send audit records in plaintext on purpose"
        )));
    }
    Ok(StoreUrl {
        config,
        schema: schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string()),
        role,
        chain_id,
    })
}

/// The first host the connection would go to over a network, unless plaintext was asked for
/// (`sslmode=disable`). This build has no TLS for PostgreSQL, so `prefer` (the default) would
/// quietly send records in the clear and `require` would fail at connect: say so at parse time.
/// A Unix socket, `localhost` and loopback addresses stay on the machine.
fn remote_without_tls(c: &tokio_postgres::Config) -> Option<String> {
    if c.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        return None;
    }
    // `hostaddr` is where the connection goes when it is given; `host` then only names the server.
    if !c.get_hostaddrs().is_empty() {
        return c
            .get_hostaddrs()
            .iter()
            .find(|a| !a.is_loopback())
            .map(|a| a.to_string());
    }
    c.get_hosts().iter().find_map(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            let local = name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            (!local).then(|| name.clone())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => None,
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
pub(crate) fn checked_chain_id(s: &str) -> Result<&str, PgError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(s)
    } else {
        Err(PgError::InvalidInput {
            what: "chain id",
            why: "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cordon_params_and_passes_the_rest() {
        let u = parse_store_url(
            "postgres://gw:s3cret@db.internal:6543/audit?schema=eu_audit&role=cordon_writer&chain=gw-fra-1-a&connect_timeout=3&sslmode=disable",
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
    fn a_remote_database_needs_plaintext_asked_for_explicitly() {
        for local in [
            "postgres://u@localhost/db",
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@[::1]/db",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/db",
            "postgres://u@db.internal/db?hostaddr=127.0.0.1",
            "postgres://u@db.internal/db?sslmode=disable",
        ] {
            assert!(parse_store_url(local).is_ok(), "{local}");
        }
        for remote in [
            "postgres://u:pw-secret@db.internal/db",
            "postgres://u:pw-secret@db.internal/db?sslmode=require",
            "postgres://u:pw-secret@10.0.0.5/db?sslmode=prefer",
            "postgres://u:pw-secret@localhost/db?hostaddr=10.0.0.5",
        ] {
            let e = parse_store_url(remote).unwrap_err().to_string();
            assert!(
                e.contains("without TLS") && e.contains("sslmode=disable"),
                "{remote}: {e}"
            );
            assert!(!e.contains("pw-secret"), "{e}");
        }
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
