//! Background loops of a serving process: health probes, usage scans, state refresh and config
//! hot reload. Failures (and panics) of one run are logged; the loop goes on.
//!
//! On a store shared by several instances (PostgreSQL, MySQL), the config is shared too,
//! through the store's `config` document (the one the Worker and the Lambda hot-switch from):
//! an instance whose file changes publishes it, and the others apply it within a few seconds
//! (keeping their own `server` and `metadata` sections). The latest change wins: at start, an
//! instance publishes its file when the file is newer than the document, else it applies the
//! document (a restarted instance with an old file does not undo a switch made meanwhile).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use shared::config::{Config, MetadataBackend, Warnings};
use shared::store::MetadataStore;

use crate::setup::{parse_config, ServerEngine};

/// Backend requests one usage scan may make; the next run resumes where this one stopped.
const SCAN_BUDGET: usize = 200;
/// Recorded older copies settled per run of the maintenance task.
const STALE_COPY_BUDGET: usize = 100;
const STALE_COPY_PERIOD: Duration = Duration::from_secs(10);
const REFRESH_PERIOD: Duration = Duration::from_secs(2);
const RELOAD_PERIOD: Duration = Duration::from_secs(2);
/// The store document that carries the shared config.
const CONFIG_DOCUMENT: &str = "config";
/// First line of a published config document: when it was published (a comment to YAML and
/// TOML, so the document stays a valid config file).
const STAMP: &str = "# s3-balance config published at unix time ";

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
        let shared = matches!(engine.config().metadata, MetadataBackend::Sql(_));
        tokio::spawn(reload_loop(
            engine.clone(),
            path,
            RELOAD_PERIOD,
            parse_config,
            shared,
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

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The config text of a published document, and when it was published.
fn unstamp(document: &str) -> (u64, &str) {
    document
        .strip_prefix(STAMP)
        .and_then(|rest| rest.split_once('\n'))
        .and_then(|(secs, text)| Some((secs.parse().ok()?, text)))
        .unwrap_or((0, document))
}

/// The shared config document as this instance last published or applied it.
struct SharedConfig {
    applied: Option<String>,
}

impl SharedConfig {
    async fn publish(&mut self, engine: &ServerEngine, text: &str, at: SystemTime) {
        let document = format!("{STAMP}{}\n{text}", unix_secs(at));
        match engine
            .store()
            .put_document(CONFIG_DOCUMENT, &document)
            .await
        {
            Ok(()) => {
                tracing::info!("config published to the shared store");
                self.applied = Some(document);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not publish the config to the shared store")
            }
        }
    }

    /// At start: publishes the file when it is newer than the stored document, else applies
    /// the document.
    async fn start(
        &mut self,
        engine: &ServerEngine,
        path: &std::path::Path,
        file: Option<&(SystemTime, String)>,
        parse: Parser,
    ) {
        let document = match engine.store().get_document(CONFIG_DOCUMENT).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the shared config document");
                return;
            }
        };
        match (file, document) {
            (Some((mtime, text)), None) => self.publish(engine, text, *mtime).await,
            (Some((mtime, text)), Some(doc)) if unstamp(&doc).0 < unix_secs(*mtime) => {
                if unstamp(&doc).1 != text {
                    self.publish(engine, text, *mtime).await;
                } else {
                    self.applied = Some(doc);
                }
            }
            (_, Some(doc)) => self.apply(engine, path, doc, parse),
            (None, None) => {}
        }
    }

    /// Applies the stored document when another instance published a new one.
    async fn follow(&mut self, engine: &ServerEngine, path: &std::path::Path, parse: Parser) {
        match engine.store().get_document(CONFIG_DOCUMENT).await {
            Ok(Some(doc)) if self.applied.as_ref() != Some(&doc) => {
                self.apply(engine, path, doc, parse)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the shared config document"),
        }
    }

    fn apply(&mut self, engine: &ServerEngine, path: &std::path::Path, doc: String, parse: Parser) {
        // Parsed as this instance's own file is (its format, its environment for `${VAR}`).
        match parse(&path.to_string_lossy(), unstamp(&doc).1) {
            Ok((mut config, warnings)) => {
                for w in warnings {
                    tracing::warn!("shared config: {w}");
                }
                let local = engine.config();
                config.server = local.server.clone();
                config.metadata = local.metadata.clone();
                engine.set_config(Arc::new(config));
                tracing::info!("config from the shared store applied");
            }
            Err(e) => {
                tracing::error!(error = %e, "the shared config document is invalid; keeping the running config")
            }
        }
        self.applied = Some(doc);
    }
}

/// Polls the config file; a valid change is applied at once, an invalid one is logged and the
/// running config stays. With `shared`, the config also goes through the store's `config`
/// document (see the module's doc).
async fn reload_loop(
    engine: Arc<ServerEngine>,
    path: PathBuf,
    period: Duration,
    parse: Parser,
    shared: bool,
) {
    let read = |path: &PathBuf| -> Option<(SystemTime, String)> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        Some((mtime, std::fs::read_to_string(path).ok()?))
    };
    let mut last = read(&path);
    let mut unreadable_logged = false;
    let mut document = SharedConfig { applied: None };
    if shared {
        document.start(&engine, &path, last.as_ref(), parse).await;
    }
    loop {
        tokio::time::sleep(period).await;
        if shared {
            document.follow(&engine, &path, parse).await;
        }
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
                if shared {
                    document.publish(&engine, &text, SystemTime::now()).await;
                }
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

    /// A stand-in parser: the file holds a strategy name; anything else is invalid.
    fn parse_strategy(_: &str, text: &str) -> Result<(Config, Warnings), String> {
        let strategy = match text.trim() {
            "round-robin" => shared::config::Strategy::RoundRobin,
            "least-space" => shared::config::Strategy::LeastSpace,
            other => return Err(format!("not a strategy: {other:?}")),
        };
        let (mut config, _) = parse_port("", "1000")?;
        config.balancer.strategy = strategy;
        Ok((config, Vec::new()))
    }

    fn strategy(engine: &ServerEngine) -> &'static str {
        engine.config().balancer.strategy.as_str()
    }

    #[tokio::test]
    async fn a_shared_store_carries_config_changes_between_instances() {
        use shared::store::MetadataStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.txt");
        std::fs::write(&path, "round-robin").unwrap();
        let mut own = parse_strategy("", "round-robin").unwrap().0;
        own.server.port = 1234; // this instance's own section: never taken from the store
        let engine = Arc::new(shared::engine::Engine::new(
            Arc::new(own),
            AnyStore::open(&MetadataBackend::Memory).unwrap(),
            native::BackendClient::new().unwrap(),
        ));
        let period = Duration::from_millis(20);
        let task = tokio::spawn(reload_loop(
            engine.clone(),
            path.clone(),
            period,
            parse_strategy,
            true,
        ));
        let settle = || tokio::time::sleep(period * 10);
        let document = || async {
            let d = engine.store().get_document(CONFIG_DOCUMENT).await.unwrap();
            d.map(|d| unstamp(&d).1.to_owned())
        };

        settle().await;
        assert_eq!(
            document().await.as_deref(),
            Some("round-robin"),
            "an empty store gets the file"
        );
        let later = unix_secs(SystemTime::now()) + 5;
        engine
            .store()
            .put_document(CONFIG_DOCUMENT, &format!("{STAMP}{later}\nleast-space"))
            .await
            .unwrap();
        settle().await;
        assert_eq!(
            strategy(&engine),
            "least-space",
            "another instance's switch applies"
        );
        assert_eq!(engine.config().server.port, 1234, "own server section kept");

        std::fs::write(&path, "round-robin\n").unwrap();
        settle().await;
        assert_eq!(strategy(&engine), "round-robin", "a file edit applies here");
        assert_eq!(
            document().await.as_deref(),
            Some("round-robin\n"),
            "and is published"
        );

        engine
            .store()
            .put_document(CONFIG_DOCUMENT, "bogus")
            .await
            .unwrap();
        settle().await;
        assert_eq!(
            strategy(&engine),
            "round-robin",
            "an invalid document is ignored"
        );
        task.abort();

        // A restarted instance whose file is older than the document follows the document.
        engine
            .store()
            .put_document(CONFIG_DOCUMENT, &format!("{STAMP}{later}\nleast-space"))
            .await
            .unwrap();
        let task = tokio::spawn(reload_loop(
            engine.clone(),
            path.clone(),
            period,
            parse_strategy,
            true,
        ));
        settle().await;
        assert_eq!(strategy(&engine), "least-space");
        assert_eq!(
            document().await.as_deref(),
            Some("least-space"),
            "not overwritten"
        );
        task.abort();
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
            false,
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
