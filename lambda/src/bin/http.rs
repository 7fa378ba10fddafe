//! `s3-balance-http`: the S3 endpoint behind a Lambda function URL or an HTTP API (payload v2).

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_balance_lambda::setup::init_logging();
    let app = Arc::new(s3_balance_lambda::setup::from_env().await?);
    lambda_http::run(service_fn(move |request: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(app.handle_http(request).await) }
    }))
    .await
}
