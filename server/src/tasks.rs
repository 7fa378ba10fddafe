//! Background loops of a serving process: health probes, usage scans, state refresh and config
//! hot reload. Failures (and panics) of one run are logged; the loop goes on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use shared::config::{Config, Warnings};

use crate::setup::{parse_config, ServerEngine};

/// Backend requests one usage scan may make; the next run resumes where this one stopped.
const SCAN_BUDGET: usize = 200;
/// Recorded older copies settled per run of the maintenance task.
const STALE_COPY_BUDGET: usize = 100;
const STALE_COPY_PERIOD: Duration = Duration::from_secs(10);
const REFRESH_PERIOD: Duration = Duration::from_secs(2);
const RELOAD_PERIOD: Duration = Duration::from_secs(2);

/// Starts the loops; `config_path` enables hot reload of that file. Returns the health-check
/// loop, which the caller polls next to the server: `check_health` borrows a `&dyn Fn` clock
/// (not `Sync`), so its future is not `Send` and cannot be spawned on the multi-threaded runtime.
pub fn start(engine: Arc<ServerEngine>, config_path: Option<PathBuf>) -> impl Future<Output = ()> {
    let e = engine.clone();
    let scan = move || {
        let e = e.clone();
        async move {
            e.scan_usage(SCAN_BUDGET, SystemTime::now())
                .await
                .map_err(|e| e.to_string())
        }
    };
    let e = engine.clone();
    tokio::spawn(every(
        move || e.config().balancer.update_stats_period,
        scan,
        "usage scan",
    ));

    // Older copies that a write could not remove right away (or that may sit on a backend
    // that was down): settled newest-wins once every backend of their pool answers.
    let e = engine.clone();
    let stale = move || {
        let e = e.clone();
        async move {
            let settled = e
                .remove_stale_copies(STALE_COPY_BUDGET, SystemTime::now())
                .await
                .map_err(|e| e.to_string())?;
            if settled > 0 {
                tracing::info!(settled, "older copies settled");
            }
            Ok(())
        }
    };
    tokio::spawn(every(|| STALE_COPY_PERIOD, stale, "stale-copy removal"));

    let e = engine.clone();
    let refresh = move || {
        let e = e.clone();
        async move {
            e.refresh(SystemTime::now())
                .await
                .map_err(|e| e.to_string())
        }
    };
    tokio::spawn(every(|| REFRESH_PERIOD, refresh, "state refresh"));

    if let Some(path) = config_path {
        tokio::spawn(reload_loop(
            engine.clone(),
            path,
            RELOAD_PERIOD,
            parse_config,
        ));
    }

    let e = engine.clone();
    let health = move || {
        let e = e.clone();
        async move {
            let snapshot = e
                .check_health(&SystemTime::now)
                .await
                .map_err(|e| e.to_string())?;
            let down: Vec<_> = snapshot
                .backends
                .iter()
                .filter(|(_, h)| !h.healthy)
                .map(|(n, _)| n.clone())
                .collect();
            if down.is_empty() {
                tracing::debug!("health check: all backends healthy");
            } else {
                tracing::warn!(unhealthy = ?down, "health check");
            }
            Ok(())
        }
    };
    every(
        move || engine.config().balancer.health_check_period,
        health,
        "health check",
    )
}

/// Runs `job` now and then every `period()` (re-read each time: the config may change).
async fn every<P, J, F>(period: P, job: J, name: &'static str)
where
    P: Fn() -> Duration,
    J: Fn() -> F,
    F: Future<Output = Result<(), String>>,
{
    loop {
        match AssertUnwindSafe(job()).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{name} failed"),
            Err(_) => tracing::error!("{name} panicked"),
        }
        // A zero period would spin; a second is the floor.
        tokio::time::sleep(period().max(Duration::from_secs(1))).await;
    }
}

type Parser = fn(&str, &str) -> Result<(Config, Warnings), String>;

/// Polls the config file; a valid change is applied at once, an invalid one is logged and the
/// running config stays.
async fn reload_loop(engine: Arc<ServerEngine>, path: PathBuf, period: Duration, parse: Parser) {
    let read = |path: &PathBuf| -> Option<(SystemTime, String)> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        Some((mtime, std::fs::read_to_string(path).ok()?))
    };
    let mut last = read(&path);
    let mut unreadable_logged = false;
    loop {
        tokio::time::sleep(period).await;
        let Some((mtime, text)) = read(&path) else {
            // Once per outage, not every poll (an editor may replace the file).
            if !std::mem::replace(&mut unreadable_logged, true) {
                tracing::warn!(path = %path.display(), "config file unreadable; keeping the running config");
            }
            continue;
        };
        unreadable_logged = false;
        // The mtime catches most edits; the content check skips touches and catches edits
        // within the mtime's resolution.
        if last
            .as_ref()
            .is_some_and(|(m, t)| *m == mtime && *t == text)
        {
            continue;
        }
        let changed = last.as_ref().is_none_or(|(_, t)| *t != text);
        last = Some((mtime, text.clone()));
        if !changed {
            continue;
        }
        match parse(&path.to_string_lossy(), &text) {
            Ok((config, warnings)) => {
                for w in warnings {
                    tracing::warn!(path = %path.display(), "config: {w}");
                }
                let old = engine.config();
                if old.server != config.server || old.metadata != config.metadata {
                    tracing::warn!(
                        "config: `server` and `metadata` changes take effect at the next restart"
                    );
                }
                engine.set_config(Arc::new(config));
                tracing::info!(path = %path.display(), "config reloaded");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "config change rejected; keeping the running config")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyStore;
    use shared::config::MetadataBackend;

    /// A stand-in parser: the file holds a port number; anything else is invalid.
    fn parse_port(_: &str, text: &str) -> Result<(Config, Warnings), String> {
        let port = text
            .trim()
            .parse()
            .map_err(|_| format!("not a port: {text:?}"))?;
        let mut config = crate::dev::dev_config(Vec::new(), std::path::Path::new("unused"), port);
        config.metadata = MetadataBackend::Memory;
        Ok((config, Vec::new()))
    }

    #[tokio::test]
    async fn valid_changes_apply_and_invalid_ones_keep_the_running_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.txt");
        std::fs::write(&path, "1000").unwrap();
        let engine = Arc::new(shared::engine::Engine::new(
            Arc::new(parse_port("", "1000").unwrap().0),
            AnyStore::open(&MetadataBackend::Memory).unwrap(),
            native::BackendClient::new().unwrap(),
        ));
        let period = Duration::from_millis(20);
        let task = tokio::spawn(reload_loop(
            engine.clone(),
            path.clone(),
            period,
            parse_port,
        ));
        let settle = || tokio::time::sleep(period * 10);

        settle().await;
        assert_eq!(
            engine.config().server.port,
            1000,
            "unchanged file: nothing happens"
        );
        std::fs::write(&path, "2000").unwrap();
        settle().await;
        assert_eq!(engine.config().server.port, 2000, "a valid change applies");
        std::fs::write(&path, "not a config").unwrap();
        settle().await;
        assert_eq!(
            engine.config().server.port,
            2000,
            "an invalid change is rejected"
        );
        std::fs::remove_file(&path).unwrap();
        settle().await;
        assert_eq!(
            engine.config().server.port,
            2000,
            "a missing file keeps the config"
        );
        std::fs::write(&path, "3000").unwrap();
        settle().await;
        assert_eq!(
            engine.config().server.port,
            3000,
            "and a fixed file applies again"
        );
        task.abort();
    }
}
