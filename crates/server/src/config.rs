//! Configuration: built-in defaults (`default.toml`), then a file, then `MANTLE__SECTION__KEY`
//! environment variables, then flags. `RawConfig` is plain data; `Config::from_raw` validates it
//! and reports every problem before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("default.toml");

/// Plain configuration data as layered from all sources.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub hub: RawHub,
    pub auth: RawAuth,
    pub runtime: RawRuntime,
    pub webhooks: RawWebhooks,
    pub retrieval: RawRetrieval,
}

/// `[retrieval]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetrieval {
    pub embedding_model: String,
}

/// `[webhooks]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    pub allowed_hosts: Vec<String>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub addr: String,
    pub public_url: String,
    pub max_json_body: u64,
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: String,
    pub database_url: String,
    pub blob_url: String,
}

/// `[hub]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHub {
    pub lfs_threshold: u64,
    pub max_inline_file: u64,
    pub max_lfs_file: u64,
    pub multipart_threshold: u64,
    pub multipart_chunk: u64,
    pub upload_url_ttl: u64,
    /// The largest file the Files API accepts.
    pub max_file_bytes: u64,
    /// The most bytes one account's uploaded files may hold.
    pub file_quota_bytes: u64,
}

/// `[auth]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub admin_name: String,
    pub admin_token_file: String,
    pub audit_key_file: String,
    pub audit_checkpoint_interval: u64,
}

/// `[runtime]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub max_queue: u64,
    pub prefill_chunk: u64,
    pub max_step_tokens: u64,
    pub models_dir: String,
    pub expand_max_bytes: u64,
    pub embed_precision: String,
    pub memory_budget: u64,
    pub usage_accounting: bool,
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FlagOverrides {
    pub addr: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub blob_url: Option<String>,
    pub admin_token_file: Option<String>,
}

impl RawConfig {
    /// Layers defaults, an optional file, `MANTLE__*` environment variables and flags.
    pub fn load(file: Option<&std::path::Path>, flags: &FlagOverrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.is_file() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("MANTLE__").split("__").map(|key| key.as_str().to_ascii_lowercase().into()));
        let mut overrides = serde_json::Map::new();
        let mut set = |section: &str, key: &str, value: &Option<String>| {
            if let Some(value) = value {
                let entry = overrides.entry(section.to_owned()).or_insert_with(|| serde_json::json!({}));
                entry[key] = serde_json::Value::String(value.clone());
            }
        };
        set("server", "addr", &flags.addr);
        set("storage", "data_dir", &flags.data_dir);
        set("storage", "database_url", &flags.database_url);
        set("storage", "blob_url", &flags.blob_url);
        set("auth", "admin_token_file", &flags.admin_token_file);
        figment = figment.merge(Serialized::defaults(serde_json::Value::Object(overrides)));
        figment.extract().map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub public_url: Option<url::Url>,
    pub max_json_body: usize,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub blob_url: String,
    pub hub: domain::hub::HubConfig,
    pub multipart_threshold: u64,
    pub multipart_chunk: u64,
    pub upload_url_ttl: u64,
    pub admin_name: domain::ids::AccountName,
    pub admin_token_file: Option<PathBuf>,
    /// Where the audit signing key lives (`None`: MANTLE_AUDIT_KEY, else DATA_DIR/audit-signing.key).
    pub audit_key_file: Option<PathBuf>,
    /// Seconds between automatic audit checkpoints; 0 for on demand only.
    pub audit_checkpoint_interval: u64,
    pub runtime: RuntimeConfig,
    /// Where webhooks may be delivered: host names, IP addresses and networks (CIDR).
    pub webhook_hosts: Vec<crate::webhooks::AllowedHost>,
    /// The deployment that embeds vector stores created without naming one (`None`: the caller's
    /// only embedding deployment).
    pub default_embedding_model: Option<String>,
}

/// Validated `[runtime]`.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Requests per deployment that may wait beyond the running ones.
    pub max_queue: usize,
    /// Prompt tokens fed per sequence per step.
    pub prefill_chunk: usize,
    /// Tokens fed per engine step across all sequences, decoding ones included.
    pub max_step_tokens: usize,
    /// Where approved model files are copied (verified) for the engine to load; derived forms
    /// (F16 expansions) go in its `derived` folder.
    pub models_dir: PathBuf,
    /// The largest F16 expansion of weights without a batched CPU kernel; 0 never expands.
    pub expand_max_bytes: u64,
    /// Arithmetic of the embedding encoder's dense layers.
    pub embed_precision: engine::Precision,
    /// Bytes the resident models may hold together before idle ones are evicted; 0: no limit.
    pub memory_budget: u64,
    /// Whether inference requests leave usage records.
    pub usage_accounting: bool,
}

impl Config {
    /// Validates every field and reports all problems at once.
    pub fn from_raw(raw: RawConfig) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        let addr = raw.server.addr.parse::<SocketAddr>().map_err(|err| problems.push(format!("server.addr {:?}: {err}", raw.server.addr))).ok();
        let public_url = if raw.server.public_url.is_empty() {
            None
        } else {
            match url::Url::parse(raw.server.public_url.trim_end_matches('/')) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                _ => {
                    problems.push(format!("server.public_url {:?} is not an http(s) URL", raw.server.public_url));
                    None
                }
            }
        };
        if raw.storage.data_dir.is_empty() {
            problems.push("storage.data_dir must not be empty".to_owned());
        }
        let data_dir = PathBuf::from(&raw.storage.data_dir);
        let database_url = if raw.storage.database_url.is_empty() { format!("sqlite://{}", data_dir.join("mantle.db").display()) } else { raw.storage.database_url.clone() };
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            problems.push(format!("storage.database_url {database_url:?}: expected sqlite://PATH or postgres://..."));
        }
        let blob_url = if raw.storage.blob_url.is_empty() { data_dir.join("blobs").display().to_string() } else { raw.storage.blob_url.clone() };
        if blob_url.contains("://") && !(blob_url.starts_with("s3://") || blob_url.starts_with("file://")) {
            problems.push(format!("storage.blob_url {blob_url:?}: expected a folder, file://PATH or s3://BUCKET/PREFIX"));
        }
        let hub = &raw.hub;
        if hub.max_inline_file < hub.lfs_threshold {
            problems.push("hub.max_inline_file must be at least hub.lfs_threshold".to_owned());
        }
        if hub.multipart_chunk < 5 * 1024 * 1024 {
            problems.push("hub.multipart_chunk must be at least 5 MiB".to_owned());
        }
        if !(1..=30 * 86400).contains(&hub.upload_url_ttl) {
            problems.push("hub.upload_url_ttl must be 1 to 2592000 seconds (30 days)".to_owned());
        }
        let runtime = &raw.runtime;
        if !(1..=100_000).contains(&runtime.max_queue) {
            problems.push("runtime.max_queue must be 1..=100000".to_owned());
        }
        if !(1..=8192).contains(&runtime.prefill_chunk) {
            problems.push("runtime.prefill_chunk must be 1..=8192".to_owned());
        }
        if !(runtime.prefill_chunk..=65536).contains(&runtime.max_step_tokens) {
            problems.push("runtime.max_step_tokens must be at least runtime.prefill_chunk and at most 65536".to_owned());
        }
        let embed_precision = match runtime.embed_precision.as_str() {
            "auto" => engine::Precision::Auto,
            "f32" => engine::Precision::F32,
            _ => {
                problems.push(format!("runtime.embed_precision must be \"auto\" or \"f32\", not {:?}", runtime.embed_precision));
                engine::Precision::Auto
            }
        };
        let models_dir = if runtime.models_dir.is_empty() { data_dir.join("models") } else { PathBuf::from(&runtime.models_dir) };
        let admin_name = domain::ids::AccountName::parse(&raw.auth.admin_name).map_err(|err| problems.push(format!("auth.admin_name: {err}"))).ok();
        let webhook_hosts = raw.webhooks.allowed_hosts.iter().filter_map(|entry| crate::webhooks::AllowedHost::parse(entry).map_err(|err| problems.push(format!("webhooks.allowed_hosts {entry:?}: {err}"))).ok()).collect();
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
        }
        Ok(Config {
            addr: addr.expect("checked above"),
            public_url,
            max_json_body: usize::try_from(raw.server.max_json_body).unwrap_or(usize::MAX),
            data_dir,
            database_url,
            blob_url,
            hub: domain::hub::HubConfig {
                lfs_threshold: hub.lfs_threshold,
                max_inline_file: hub.max_inline_file,
                max_lfs_file: hub.max_lfs_file,
                scanner_version: vet::SCANNER_VERSION.to_owned(),
                upload_url_ttl_secs: hub.upload_url_ttl,
                max_file_bytes: hub.max_file_bytes,
                file_quota_bytes: hub.file_quota_bytes,
            },
            multipart_threshold: hub.multipart_threshold,
            multipart_chunk: hub.multipart_chunk,
            upload_url_ttl: hub.upload_url_ttl,
            admin_name: admin_name.expect("checked above"),
            admin_token_file: (!raw.auth.admin_token_file.is_empty()).then(|| PathBuf::from(&raw.auth.admin_token_file)),
            audit_key_file: (!raw.auth.audit_key_file.is_empty()).then(|| PathBuf::from(&raw.auth.audit_key_file)),
            audit_checkpoint_interval: raw.auth.audit_checkpoint_interval,
            runtime: RuntimeConfig {
                max_queue: runtime.max_queue as usize,
                prefill_chunk: runtime.prefill_chunk as usize,
                max_step_tokens: runtime.max_step_tokens as usize,
                models_dir,
                expand_max_bytes: runtime.expand_max_bytes,
                embed_precision,
                memory_budget: if runtime.memory_budget == 0 { default_memory_budget() } else { runtime.memory_budget },
                usage_accounting: runtime.usage_accounting,
            },
            webhook_hosts,
            default_embedding_model: Some(raw.retrieval.embedding_model.trim().to_owned()).filter(|m| !m.is_empty()),
        })
    }
}

/// Three quarters of this machine's memory (`MemTotal` in /proc/meminfo); no limit where that
/// cannot be read.
fn default_memory_budget() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| text.lines().find_map(|line| line.strip_prefix("MemTotal:").and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())));
    total_kib.map_or(0, |kib| kib * 1024 / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let raw = RawConfig::load(None, &FlagOverrides::default()).unwrap();
        let config = Config::from_raw(raw).unwrap();
        assert_eq!(config.addr.port(), 8080);
        assert!(config.database_url.ends_with("mantle.db"));
    }

    #[test]
    fn flags_override_and_errors_are_collected() {
        let flags = FlagOverrides { addr: Some("nonsense".into()), database_url: Some("mysql://x".into()), ..Default::default() };
        let err = Config::from_raw(RawConfig::load(None, &flags).unwrap()).unwrap_err().to_string();
        assert!(err.contains("server.addr") && err.contains("database_url"), "{err}");
    }

    #[test]
    fn the_embedding_precision_is_auto_f32_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mantle.toml");
        let config = |value: &str| {
            std::fs::write(&file, format!("[runtime]\nembed_precision = {value:?}\n")).unwrap();
            Config::from_raw(RawConfig::load(Some(&file), &FlagOverrides::default()).unwrap())
        };
        assert_eq!(Config::from_raw(RawConfig::load(None, &FlagOverrides::default()).unwrap()).unwrap().runtime.embed_precision, engine::Precision::Auto);
        assert_eq!(config("f32").unwrap().runtime.embed_precision, engine::Precision::F32);
        let err = config("bf16").unwrap_err().to_string();
        assert!(err.contains("runtime.embed_precision"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mantle.toml");
        std::fs::write(&file, "[server]\nadress = \"x\"\n").unwrap();
        assert!(RawConfig::load(Some(&file), &FlagOverrides::default()).is_err());
    }
}
