//! Building the [`App`] of a Lambda instance from its environment.

use std::time::Duration;

use native::{BackendClient, ClientSettings, PoolScope};
use shared::config::Config;

use crate::{parse_config, App, DynamoStore};

/// The app as the two functions build it.
pub type LambdaApp = App<DynamoStore, BackendClient>;

/// Reads `S3_BALANCE_CONFIG` (YAML or TOML, `${VAR}` from the environment) and
/// `S3_BALANCE_TABLE`, and builds the app over DynamoDB (the SDK's standard environment:
/// region, credentials, `AWS_ENDPOINT_URL_DYNAMODB`).
pub async fn from_env() -> Result<LambdaApp, String> {
    let table = std::env::var("S3_BALANCE_TABLE")
        .map_err(|_| "S3_BALANCE_TABLE is not set (the DynamoDB table name)".to_owned())?;
    let text = std::env::var("S3_BALANCE_CONFIG").map_err(|_| {
        "S3_BALANCE_CONFIG is not set (the config document, YAML or TOML)".to_owned()
    })?;
    let (config, warnings): (Config, _) = parse_config(&text, &|name| std::env::var(name).ok())
        .map_err(|e| format!("S3_BALANCE_CONFIG: {e}"))?;
    for w in warnings {
        tracing::warn!(warning = %w, "S3_BALANCE_CONFIG");
    }
    let store = DynamoStore::new(DynamoStore::client_from_env().await, &table);
    let client = backend_client(&config)?;
    Ok(App::new(config, &table, store, client))
}

/// The HTTP client to backends, with the config's `backend_client` timeouts (read at start:
/// a changed `config` document does not change them). One pool for the instance: the runtime
/// is multi-threaded, and Lambda freezes idle instances, so pooled connections are dropped
/// sooner than the server's (one may be dead when the instance thaws).
pub fn backend_client(config: &Config) -> Result<BackendClient, String> {
    let settings = ClientSettings::new(&config.backend_client, PoolScope::Shared)
        .pool_idle_timeout(Duration::from_secs(30));
    BackendClient::with_settings(settings).map_err(|e| format!("building the HTTP client: {e}"))
}

/// JSON logs to stdout (CloudWatch), level from `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time() // CloudWatch stamps each line
        .init();
}
