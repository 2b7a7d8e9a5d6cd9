//! The development identity for the quickstart: an Ed25519 key in the data dir, published as the
//! JWKS file the built-in policy trusts (`issuer: cordon-dev`). Never for production.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use crate::DataDir;

pub const DEV_ISSUER: &str = "cordon-dev";
pub const DEV_AUDIENCE: &str = "cordon";
const DEV_KID: &str = "cordon-dev-1";

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The subject id (a user id; it is pseudonymized before it reaches the audit log).
    #[arg(long, default_value = "dev-user")]
    pub subject: String,
    /// The subject's country (ISO 3166-1 alpha-2, e.g. DE) ...
    #[arg(
        long,
        conflicts_with = "jurisdiction",
        required_unless_present = "jurisdiction"
    )]
    pub country: Option<String>,
    /// ... or a jurisdiction (e.g. EU).
    #[arg(long)]
    pub jurisdiction: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    #[command(flatten)]
    pub data: DataDir,
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("dev-issuer.pk8")
}

/// Create the development key and its JWKS file if missing; return the key pair (PKCS#8 bytes).
pub fn ensure_dev_key(dir: &Path) -> Result<Vec<u8>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = key_path(dir);
    let pkcs8 = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate the development key"))?;
            write_private(&path, doc.as_ref())?;
            doc.as_ref().to_vec()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 key", path.display()))?;
    let jwks =
        serde_json::json!({ "keys": [cordon_identity::ed25519_jwk(DEV_KID, pair.public_key().as_ref())] });
    std::fs::write(dir.join("dev-jwks.json"), serde_json::to_vec_pretty(&jwks)?)?;
    Ok(pkcs8)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Sign a development token.
pub fn mint(dir: &Path, subject: &str, residency: &str, ttl: u64) -> Result<String> {
    let pkcs8 = ensure_dev_key(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": subject, "country": residency,
        "iat": now, "nbf": now, "exp": now + ttl,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(DEV_KID.to_string());
    let key = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

pub fn token(a: TokenArgs) -> Result<ExitCode> {
    let residency = match (&a.country, &a.jurisdiction) {
        (Some(c), _) => c.to_ascii_uppercase(),
        (None, Some(j)) => j.to_ascii_uppercase(),
        (None, None) => bail!("give --country or --jurisdiction"),
    };
    if residency.len() < 2 || !residency.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("'{residency}' is not a country code or jurisdiction id");
    }
    eprintln!("development token for the quickstart issuer '{DEV_ISSUER}' (never use in production)");
    println!("{}", mint(&a.data.data_dir, &a.subject, &residency, a.ttl)?);
    Ok(ExitCode::SUCCESS)
}
