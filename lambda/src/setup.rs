//! Building the [`App`] of a Lambda instance from its environment.

use shared::config::Config;

use crate::client::ReqwestClient;
use crate::{parse_config, App, DynamoStore};

/// The app as the two functions build it.
pub type LambdaApp = App<DynamoStore, ReqwestClient>;

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
    let client = ReqwestClient::new().map_err(|e| format!("building the HTTP client: {e}"))?;
    Ok(App::new(config, &table, store, client))
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
