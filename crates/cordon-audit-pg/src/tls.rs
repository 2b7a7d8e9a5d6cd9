//! TLS for PostgreSQL connections ([`crate::url`] decides when it is on): rustls with the
//! aws-lc-rs provider (as the upstream client), the server's certificate chain and host name
//! always checked, against the PEM roots of `sslrootcert` or the platform's trust store.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use rustls_platform_verifier::BuilderVerifierExt;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PgError;
use crate::url::Tls;

/// Make `config`'s `sslmode` say what `tls` says: `disable` for [`Tls::Off`] (whatever the
/// connection string said: tokio-postgres' default `prefer` would try TLS), `require` otherwise.
pub(crate) fn apply(config: &mut tokio_postgres::Config, tls: &Tls) {
    config.ssl_mode(match tls {
        Tls::Off => tokio_postgres::config::SslMode::Disable,
        Tls::Verify { .. } => tokio_postgres::config::SslMode::Require,
    });
}

/// The TLS connector for `tls`. For [`Tls::Off`] the connection's `sslmode` is `disable` (see
/// [`apply`]), so the connector (with no trusted roots at all) is never used.
pub fn connector(tls: &Tls) -> Result<MakeRustlsConnect, PgError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?;
    let config = match tls {
        Tls::Off => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        Tls::Verify {
            root_cert: Some(path),
        } => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
        Tls::Verify { root_cert: None } => builder
            .with_platform_verifier()
            .map_err(|e| PgError::Tls(format!("platform trust store: {e}")))?
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate of a PEM file, as trust anchors.
fn roots_from(path: &Path) -> Result<RootCertStore, PgError> {
    let bad = |e: &dyn std::fmt::Display| PgError::Tls(format!("sslrootcert {}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    Ok(roots)
}

/// Connect with `config` and `tls` (which decides `sslmode`) and drive the connection on a
/// task; the client's errors report a dropped connection.
pub async fn connect(config: &tokio_postgres::Config, tls: &Tls) -> Result<tokio_postgres::Client, PgError> {
    let store = crate::redact_config(config);
    let mut config = config.clone();
    apply(&mut config, tls);
    let (client, connection) = config
        .connect(connector(tls)?)
        .await
        .map_err(|e| PgError::Connect {
            store,
            cause: crate::error::describe_pg_error(&e),
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers the client's TLS request with "no" (PostgreSQL's `N`): the client
    /// must give up, not carry on in plaintext. The fake server reports whatever the client sent
    /// after the refusal (a plaintext startup message would carry the user and database names).
    #[tokio::test]
    async fn a_server_refusing_tls_gets_no_plaintext_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut ssl_request = [0u8; 8];
            sock.read_exact(&mut ssl_request).await.unwrap();
            sock.write_all(b"N").await.unwrap();
            let mut after = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut after)).await;
            (ssl_request, after)
        });
        let url = format!("postgres://auditor@localhost:{port}/audit?hostaddr=127.0.0.1&sslmode=require");
        let parsed = crate::parse_store_url(&url).unwrap();
        assert!(matches!(parsed.tls, crate::Tls::Verify { .. }));
        let err = crate::connect(&parsed.config, &parsed.tls)
            .await
            .err()
            .unwrap_or_else(|| panic!("connected although the server refused TLS"));
        let (ssl_request, after) = server.await.unwrap();
        // 8-byte SSLRequest: length 8, code 80877103.
        assert_eq!(ssl_request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        assert!(
            after.is_empty(),
            "the client went on in plaintext: {after:?} ({err})"
        );
    }
}
