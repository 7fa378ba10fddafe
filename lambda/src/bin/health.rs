//! `s3-balance-health`: run by an EventBridge schedule; probes the backends, stores the health
//! snapshot and usage in DynamoDB for the HTTP function to read.

use lambda_runtime::{service_fn, Error, LambdaEvent};

/// Backend requests one usage scan may make; the next run resumes from the stored cursor.
const SCAN_BUDGET: usize = 50;

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_balance_lambda::setup::init_logging();
    let app = s3_balance_lambda::setup::from_env().await?;
    let app = &app;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            app.run_scheduled(SCAN_BUDGET).await.map_err(Error::from)
        },
    ))
    .await
}
