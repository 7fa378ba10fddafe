//! Loading the config file and building the engine from it.

use std::path::Path;
use std::sync::Arc;

use shared::config::{Config, Warnings};
use shared::engine::Engine;

use native::{BackendClient, ClientSettings, PoolScope};

use crate::store::AnyStore;

/// The engine as this server builds it.
pub type ServerEngine = Engine<AnyStore, BackendClient>;

/// Parses config text by the one rule of [`Config::from_text`] (the file name's extension,
/// else the content), with `${VAR}` from the process environment.
pub fn parse_config(name: &str, text: &str) -> Result<(Config, Warnings), String> {
    Config::from_text(Some(name), text, &|var| std::env::var(var).ok()).map_err(|e| e.to_string())
}

/// Reads and parses the config file.
pub fn load_config(path: &Path) -> Result<(Config, Warnings), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_config(&path.to_string_lossy(), &text)
}

/// The engine over the store the config names and one HTTP client, pooled per event-loop
/// thread, with the config's `backend_client` timeouts (read at start: a reload does not
/// change them).
pub fn build_engine(config: Config) -> Result<Arc<ServerEngine>, String> {
    let store = AnyStore::open(&config.metadata)?;
    let settings = ClientSettings::new(&config.backend_client, PoolScope::PerThread);
    let client = BackendClient::with_settings(settings)
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let engine = Engine::new(Arc::new(config), store, client);
    // Its name in the leases of drain and rebalance steps.
    engine.set_instance_id(format!(
        "gw-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    Ok(Arc::new(engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_load_with_secrets_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "buckets:\n  - name: one\n    endpoint: http://127.0.0.1:9000\n    access_key_id: ak\n    \
             secret_access_key: ${S3_BALANCE_TEST_SECRET_7}\n    path_style: true\n\
             s3api:\n  access_key: gw\n  secret_key: gws\n",
        )
        .unwrap();
        let err = load_config(&path).unwrap_err();
        assert!(
            err.contains("S3_BALANCE_TEST_SECRET_7"),
            "names the missing variable: {err}"
        );
        // The variable name is unique to this test, so setting it races with nothing.
        std::env::set_var("S3_BALANCE_TEST_SECRET_7", "from-env");
        let (config, _) = load_config(&path).unwrap();
        assert_eq!(config.backends[0].secret_key.expose(), "from-env");
        assert!(load_config(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .contains("missing.yaml"));
    }
}
