//! `s3-balance healthcheck`: GET `/health` of a running gateway and exit 0 on `200 OK`.
//!
//! The container image is `FROM scratch` (no shell, no curl), so its `HEALTHCHECK` and a
//! Kubernetes `exec` probe run the binary itself. One HTTP/1.1 request on a plain TCP
//! connection, bounded by a timeout: the gateway listens in plain HTTP (TLS ends at the proxy
//! or ingress in front of it).

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Exit status of the check, with the reason printed on failure.
pub async fn run(url: &str, timeout: Duration) -> ExitCode {
    match tokio::time::timeout(timeout, probe(url)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("unhealthy: {url}: no answer within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending: {e}"))?;
    // The status line is all that is needed; /health answers a small JSON document.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.lines().next().unwrap_or_default();
    match status.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("answered {status:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(answer: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn ok_only_on_200() {
        let port = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(run(&url, Duration::from_secs(5)).await, ExitCode::SUCCESS);

        let port = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(run(&url, Duration::from_secs(5)).await, ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn fails_when_nothing_listens_or_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(run(&url, Duration::from_secs(5)).await, ExitCode::FAILURE);

        // Accepts and never answers: the timeout ends the check.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", silent.local_addr().unwrap());
        assert_eq!(
            run(&url, Duration::from_millis(300)).await,
            ExitCode::FAILURE
        );
        drop(silent);

        assert_eq!(
            run("https://127.0.0.1:1/health", Duration::from_secs(1)).await,
            ExitCode::FAILURE
        );
    }
}
