//! First start: make sure the site administrator exists and holds the configured token.

use std::io::Write as _;

use anyhow::Context as _;
use domain::auth::{generate_token, hash_token};

use crate::AppState;

/// Where the admin token comes from, in order: `--admin-token-file`, `MANTLE_ADMIN_TOKEN`, an
/// existing `DATA_DIR/admin-token`, or a new token written there with mode 0600. A configured token
/// that changed revokes the previous configured one, so rotating the secret really rotates it.
pub async fn admin_token(state: &AppState) -> anyhow::Result<()> {
    let config = &state.config;
    // A token the operator configured replaces earlier ones; generated tokens (one per data folder) do not.
    let configured = config.admin_token_file.is_some() || std::env::var("MANTLE_ADMIN_TOKEN").is_ok();
    let secret = if let Some(file) = &config.admin_token_file {
        std::fs::read_to_string(file).with_context(|| format!("read admin token file {}", file.display()))?.trim().to_owned()
    } else if let Ok(token) = std::env::var("MANTLE_ADMIN_TOKEN") {
        token.trim().to_owned()
    } else {
        let path = config.data_dir.join("admin-token");
        if path.is_file() {
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?.trim().to_owned()
        } else {
            std::fs::create_dir_all(&config.data_dir).with_context(|| format!("create {}", config.data_dir.display()))?;
            let token = generate_token();
            write_private(&path, &token).with_context(|| format!("write {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated the admin token; read it from this file");
            token
        }
    };
    if secret.len() < 16 {
        anyhow::bail!("the admin token must be at least 16 characters");
    }
    let created = state.hub.ensure_admin_token(&config.admin_name, &hash_token(&secret), configured).await.map_err(|err| anyhow::anyhow!("{err}"))?;
    if created {
        tracing::info!(admin = %config.admin_name, "admin token registered");
    }
    Ok(())
}

/// Writes a secret through a temp file and rename, readable by the owner only.
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}
