//! Loading the config file and building the engine from it.

use std::path::Path;
use std::sync::Arc;

use shared::config::{Config, Warnings};
use shared::engine::Engine;

use crate::client::ReqwestClient;
use crate::store::AnyStore;

/// The engine as this server builds it.
pub type ServerEngine = Engine<AnyStore, ReqwestClient>;

/// `${VAR}` references in the config text, from the process environment (secrets stay out of
/// the file).
pub fn expand_env(text: &str) -> Result<String, String> {
    // TODO(merge): `shared::config::expand_env(text, &|n| std::env::var(n).ok())` once it is on main.
    Ok(text.to_owned())
}

/// Parses config text as `name` says (`.toml` is TOML, anything else YAML).
pub fn parse_config(name: &str, text: &str) -> Result<(Config, Warnings), String> {
    Config::from_named(name, &expand_env(text)?).map_err(|e| e.to_string())
}

/// Reads and parses the config file.
pub fn load_config(path: &Path) -> Result<(Config, Warnings), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_config(&path.to_string_lossy(), &text)
}

/// The engine over the store the config names and one pooled HTTP client.
pub fn build_engine(config: Config) -> Result<Arc<ServerEngine>, String> {
    let store = AnyStore::open(&config.metadata)?;
    let client = ReqwestClient::new().map_err(|e| format!("building the HTTP client: {e}"))?;
    Ok(Arc::new(Engine::new(Arc::new(config), store, client)))
}
