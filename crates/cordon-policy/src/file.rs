//! The policy file (`cordon.yaml`) as written by people: plain serde structs, no logic beyond defaults.
//! `compile` turns it into the lookup tables the decision uses; `check` reports what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use cordon_types::{Country, Jurisdiction, Region, Tier, TransferMechanism};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole policy file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub identity: IdentitySection,
    /// Per-tier audit handling. Missing tiers get the defaults of [`TierSpec::default_for`].
    #[serde(default)]
    pub tiers: BTreeMap<u8, TierSpec>,
    /// Which transfer mechanisms this organisation actually uses, per (from, to, tier).
    #[serde(default)]
    pub transfers: Vec<TransferRule>,
    /// The processor register: who processes, under which agreement.
    #[serde(default)]
    pub providers: BTreeMap<String, OperatorSpec>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    pub audit: AuditSection,
    /// Regions this policy declares itself (`dc:fra-1: { country: DE }`) or overrides.
    #[serde(default)]
    pub regions: BTreeMap<Region, RegionSpec>,
    /// Jurisdictions this policy adds or overrides.
    #[serde(default)]
    pub jurisdictions: BTreeMap<Jurisdiction, JurisdictionSpec>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    #[serde(default = "default_gateway_id")]
    pub id: String,
    /// Where this instance runs (condition 3). May be overridden by `CORDON_GATEWAY_REGION`.
    #[serde(default)]
    pub region: Option<Region>,
    /// A development instance (the quickstart): no region of its own, so condition 3 is not judged.
    /// A policy without `region` that is not marked `development` is an error.
    #[serde(default)]
    pub development: bool,
    /// Named in `gateway_out_of_jurisdiction` errors.
    #[serde(default)]
    pub regional_gateways: BTreeMap<Jurisdiction, String>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            id: default_gateway_id(),
            region: None,
            development: false,
            regional_gateways: BTreeMap::new(),
        }
    }
}

fn default_gateway_id() -> String {
    "cordon".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    #[serde(default)]
    pub issuers: Vec<IssuerSpec>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// Header carrying the request-origin region: recorded, never used for the decision.
    #[serde(default = "default_origin_header")]
    pub origin_header: String,
    /// How long a verified token may be reused without re-checking its signature (bounded by `exp`,
    /// and ended early when its issuer's key set is refreshed). 0 turns the cache off.
    #[serde(default = "default_token_cache_seconds")]
    pub token_cache_seconds: u64,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            issuers: Vec::new(),
            api_keys: Vec::new(),
            origin_header: default_origin_header(),
            token_cache_seconds: default_token_cache_seconds(),
        }
    }
}

fn default_origin_header() -> String {
    "x-request-origin-region".to_string()
}
fn default_token_cache_seconds() -> u64 {
    30
}

/// A trusted JWT issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (at least one must match).
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS document on disk (re-read when it changes).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// For HS256 only: the environment variable holding the shared secret. HS256 is accepted only
    /// when this is set and `HS256` is listed in `algorithms`.
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// Accepted algorithms; the token header's `alg` must be one of these and match the key.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim path of the subject id (dots for nesting).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claim path of the residency: a country (`DE`) or a jurisdiction (`EU`).
    #[serde(default = "default_residency_claim")]
    pub residency_claim: String,
    /// Clock leeway for exp/nbf, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_subject_claim() -> String {
    "sub".to_string()
}
fn default_residency_claim() -> String {
    "country".to_string()
}
fn default_leeway() -> u64 {
    30
}

/// A workload API key. The secret itself is never in the file: only `sha256:<hex>` of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub id: String,
    pub hash: String,
    pub jurisdiction: Jurisdiction,
    #[serde(default)]
    pub country: Option<Country>,
    #[serde(default = "default_tier")]
    pub tier: Tier,
}

fn default_tier() -> Tier {
    Tier::Personal
}

/// What the audit record carries for a tier, and when it must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    pub audit_payload: PayloadMode,
    #[serde(default = "default_durability")]
    pub durability: Durability,
}

fn default_durability() -> Durability {
    Durability::Strict
}

impl TierSpec {
    pub fn default_for(tier: Tier) -> TierSpec {
        match tier {
            Tier::Personal => TierSpec {
                audit_payload: PayloadMode::Encrypted,
                durability: Durability::Strict,
            },
            Tier::Derived => TierSpec {
                audit_payload: PayloadMode::Digest,
                durability: Durability::Overlapped,
            },
            Tier::NotPersonal => TierSpec {
                audit_payload: PayloadMode::None,
                durability: Durability::Overlapped,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    None,
    Digest,
    Encrypted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The decision record is durable before the request is forwarded.
    Strict,
    /// The fsync runs while the upstream works; the response is released only once it is durable.
    Overlapped,
}

/// Enables a transfer mechanism for (from, to, tiers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRule {
    pub from: Jurisdiction,
    pub to: Jurisdiction,
    pub tiers: Vec<Tier>,
    pub mechanism: TransferMechanism,
    /// Contract / TIA / regulator approval reference. Required for `scc`, and for any transfer out of
    /// a `localized` jurisdiction.
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub expires: Option<Day>,
}

/// An entry of the processor register.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    #[serde(default)]
    pub dpa: Option<String>,
    #[serde(default)]
    pub expires: Option<Day>,
    /// Certified under the EU-US Data Privacy Framework (and its UK/Swiss extensions): conditional
    /// adequacy counts only for certified operators.
    #[serde(default)]
    pub dpf_certified: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub endpoints: Vec<EndpointSpec>,
}

/// One upstream that serves a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub id: String,
    pub provider: ProviderKind,
    /// Key into `providers` (the processor register).
    #[serde(default)]
    pub operator: Option<String>,
    /// Base URL (`https://eu.api.example.com/v1`); not used by `echo`.
    #[serde(default)]
    pub url: Option<String>,
    /// Processing location: regions and/or named processing sets. Permitted only if every region is.
    pub regions: Vec<Region>,
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Environment variable holding the upstream credential.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model name sent upstream (default: the model's own name).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Azure OpenAI deployment name.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Azure OpenAI `api-version`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `echo` only: answer after this many milliseconds (a stand-in for a model's latency in tests
    /// and benchmarks).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

fn default_priority() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Echo,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Echo => "echo",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Jurisdictions without an explicit store get `<root>/<JURISDICTION>` (relative paths are under
    /// the data dir), kept where the gateway runs: on a production gateway only for jurisdictions
    /// whose records may be kept in the gateway's region (others have no store; `policy check`
    /// warns about those the gateway may serve).
    #[serde(default)]
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub stores: BTreeMap<Jurisdiction, StoreSpec>,
    /// Group-commit batch delay, microseconds.
    #[serde(default)]
    pub batch_delay_us: Option<u64>,
    /// Sign a checkpoint once this many records are durable since the last one (default 1024).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// ... or once this long has passed with records no checkpoint covers yet, milliseconds
    /// (default 1000). This bounds how long a record stays unattested.
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
}

/// One jurisdiction's audit store: a directory (`path`) or a PostgreSQL database (`postgres`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// A directory of segment files (relative paths are under the data dir).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `postgres://user@host:port/db?schema=...`: for several gateway replicas in one region, each
    /// writing its own chain (`chain`, default the gateway id) without a global lock.
    #[serde(default)]
    pub postgres: Option<String>,
    #[serde(default)]
    pub chain: Option<String>,
    #[serde(default)]
    pub region: Option<Region>,
    /// The disaster-recovery copy: receives every signed checkpoint (and shipped segments).
    #[serde(default)]
    pub replica: Option<ReplicaSpec>,
    /// A witness / timestamp hook: a command (program and arguments) run after every checkpoint
    /// with the signed checkpoint on stdin.
    #[serde(default)]
    pub witness: Option<Vec<String>>,
    /// PostgreSQL stores: a directory the gateway can add to but whoever administers the database
    /// cannot rewrite (another volume or host, mounted without delete rights), which receives
    /// every signed checkpoint of this gateway's chain in `<publish>/<chain>/` (relative paths are
    /// under the data dir). `cordon audit verify` checks the database against it: without it, a
    /// database owner can cut the tail of a chain along with its checkpoints undetected.
    /// Directory stores publish to their `replica`.
    #[serde(default)]
    pub publish: Option<PathBuf>,
    /// PostgreSQL stores: the chain's checkpoint signing key (PKCS#8 Ed25519). Default
    /// `<data dir>/audit-keys/<JURISDICTION>/<chain>/checkpoint.key`, created on first use; a chain
    /// is signed by one key only (recorded in the database and at `publish`).
    #[serde(default)]
    pub checkpoint_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSpec {
    pub path: PathBuf,
    pub region: Region,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub country: Country,
    #[serde(default)]
    pub city: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JurisdictionSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Countries (or groups such as `EU27`) that belong to it.
    #[serde(default)]
    pub countries: Option<Vec<String>>,
    #[serde(default)]
    pub localized: Option<bool>,
    /// Destinations this policy treats as adequate for this jurisdiction's regime (replaces the
    /// reference list when given).
    #[serde(default)]
    pub adequate: Option<Vec<Jurisdiction>>,
}

/// Request limits and upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "default_total_ms")]
    pub total_timeout_ms: u64,
    /// Consecutive failures that eject an endpoint, and how long it stays out.
    #[serde(default = "default_eject_after")]
    pub eject_after_failures: u32,
    #[serde(default = "default_cooldown_ms")]
    pub eject_cooldown_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_body(),
            connect_timeout_ms: default_connect_ms(),
            first_byte_timeout_ms: default_first_byte_ms(),
            total_timeout_ms: default_total_ms(),
            eject_after_failures: default_eject_after(),
            eject_cooldown_ms: default_cooldown_ms(),
        }
    }
}

fn default_body() -> usize {
    4 * 1024 * 1024
}
fn default_connect_ms() -> u64 {
    2_000
}
fn default_first_byte_ms() -> u64 {
    60_000
}
fn default_total_ms() -> u64 {
    300_000
}
fn default_eject_after() -> u32 {
    3
}
fn default_cooldown_ms() -> u64 {
    10_000
}

/// A calendar day (`2027-06-30`), for `expires` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub time::Date);

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

impl std::str::FromStr for Day {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        time::Date::parse(s.trim(), DAY_FORMAT)
            .map(Day)
            .map_err(|_| format!("'{s}' is not a date of the form YYYY-MM-DD"))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = (self.0.year(), self.0.month() as u8, self.0.day());
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
