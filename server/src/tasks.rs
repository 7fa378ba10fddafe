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

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use shared::config::{Config, MetadataBackend};
use shared::engine::{Budget, ConfigUpdate, REFRESH_PERIOD};
use shared::store::MetadataStore;

use crate::setup::ServerEngine;

const RELOAD_PERIOD: Duration = Duration::from_secs(2);
/// The store document that carries the shared config.
const CONFIG_DOCUMENT: &str = "config";
/// First line of a published config document: when it was published (a comment to YAML and
/// TOML, so the document stays a valid config file).
const STAMP: &str = "# s3-balance config published at unix time ";

/// Starts the config hot reload of `config_path` (when given) and returns the scheduler, which
/// the caller polls next to the server. The engine decides which jobs are due
/// ([`ServerEngine::take_due_jobs`]); this loop runs them side by side in its one task (a slow
/// usage scan never delays the health probes) and sleeps until the next deadline. A job's
/// failure or panic is logged and it is due again one period later.
pub fn start(engine: Arc<ServerEngine>, config_path: Option<PathBuf>) -> impl Future<Output = ()> {
    if let Some(path) = config_path {
        let shared = matches!(engine.config().metadata, MetadataBackend::Sql(_));
        tokio::spawn(reload_loop(
            engine.clone(),
            path,
            RELOAD_PERIOD,
            env_var,
            shared,
        ));
    }
    run_schedule(engine)
}

async fn run_schedule(engine: Arc<ServerEngine>) {
    let mut running = FuturesUnordered::new();
    loop {
        for job in engine.take_due_jobs(SystemTime::now()) {
            let engine = engine.clone();
            running.push(async move {
                let run = engine.run_job(job, Budget::SERVER, &SystemTime::now);
                match AssertUnwindSafe(run).catch_unwind().await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(_) => tracing::error!("{} panicked", job.name()),
                }
            });
        }
        let now = SystemTime::now();
        // A hot switch may shorten a period: look again within the shortest one anyway.
        let wait = engine
            .next_deadline(now)
            .map_or(REFRESH_PERIOD, |at| {
                at.duration_since(now).unwrap_or_default()
            })
            .min(REFRESH_PERIOD);
        tokio::select! {
            Some(()) = running.next() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Where `${NAME}` in a config text comes from: the process environment (tests give their own).
type Vars = fn(&str) -> Option<String>;

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Applies a config text through the engine's one reload rule ([`ServerEngine::apply_config_text`])
/// and logs what happened; `adapt` is what this instance changes in it. True when it changed
/// the config in force.
fn apply(
    engine: &ServerEngine,
    origin: &str,
    path: &std::path::Path,
    text: &str,
    vars: Vars,
    adapt: &dyn Fn(Config) -> Config,
) -> bool {
    match engine.apply_config_text(Some(&path.to_string_lossy()), text, &vars, adapt) {
        ConfigUpdate::Unchanged => false,
        ConfigUpdate::Applied {
            warnings,
            restart_needed,
        } => {
            for w in warnings {
                tracing::warn!(path = %path.display(), "{origin}: {w}");
            }
            if restart_needed {
                tracing::warn!(
                    "config: `server` and `metadata` changes take effect at the next restart"
                );
            }
            tracing::info!(path = %path.display(), "{origin} applied");
            true
        }
        ConfigUpdate::Rejected(e) => {
            tracing::error!(path = %path.display(), error = %e, "{origin} rejected; keeping the running config");
            false
        }
    }
}

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
        vars: Vars,
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
            (_, Some(doc)) => self.apply(engine, path, doc, vars),
            (None, None) => {}
        }
    }

    /// Applies the stored document when another instance published a new one.
    async fn follow(&mut self, engine: &ServerEngine, path: &std::path::Path, vars: Vars) {
        match engine.store().get_document(CONFIG_DOCUMENT).await {
            Ok(Some(doc)) if self.applied.as_ref() != Some(&doc) => {
                self.apply(engine, path, doc, vars)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the shared config document"),
        }
    }

    fn apply(&mut self, engine: &ServerEngine, path: &std::path::Path, doc: String, vars: Vars) {
        // Read as this instance's own file is (its format, its environment for `${VAR}`),
        // keeping this instance's own `server` and `metadata` sections.
        let local = engine.config();
        apply(
            engine,
            "config from the shared store",
            path,
            unstamp(&doc).1,
            vars,
            &|mut config| {
                config.server = local.server.clone();
                config.metadata = local.metadata.clone();
                config
            },
        );
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
    vars: Vars,
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
        document.start(&engine, &path, last.as_ref(), vars).await;
    }
    loop {
        tokio::time::sleep(period).await;
        if shared {
            document.follow(&engine, &path, vars).await;
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
        if apply(&engine, "config file", &path, &text, vars, &|config| config) && shared {
            document.publish(&engine, &text, SystemTime::now()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyStore;
    use shared::config::MetadataBackend;

    /// A config file: one backend, one virtual bucket, the strategy and port given, the
    /// backend's secret from `${SECRET}`.
    fn text(strategy: &str, port: u16) -> String {
        format!(
            "server:\n  port: {port}\nmetadata:\n  type: memory\nbalancer:\n  strategy: {strategy}\nbuckets:\n  - name: one\n    endpoint: http://127.0.0.1:9\n    access_key_id: k\n    secret_access_key: ${{SECRET}}\n  - name: photos\n    virtual: true\n"
        )
    }

    fn vars(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s".to_owned())
    }

    fn load(text: &str) -> Config {
        Config::from_text(Some("config.yaml"), text, &vars)
            .unwrap()
            .0
    }

    fn strategy(engine: &ServerEngine) -> &'static str {
        engine.config().balancer.strategy.as_str()
    }

    #[tokio::test]
    async fn a_shared_store_carries_config_changes_between_instances() {
        use shared::store::MetadataStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text("round-robin", 1000)).unwrap();
        let mut own = load(&text("round-robin", 1000));
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
            vars,
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
            Some(text("round-robin", 1000).as_str()),
            "an empty store gets the file"
        );
        let later = unix_secs(SystemTime::now()) + 5;
        engine
            .store()
            .put_document(
                CONFIG_DOCUMENT,
                &format!("{STAMP}{later}\n{}", text("least-space", 1000)),
            )
            .await
            .unwrap();
        settle().await;
        assert_eq!(
            strategy(&engine),
            "least-space",
            "another instance's switch applies"
        );
        assert_eq!(engine.config().server.port, 1234, "own server section kept");

        let edited = format!("{}# edited\n", text("round-robin", 1000));
        std::fs::write(&path, &edited).unwrap();
        settle().await;
        assert_eq!(strategy(&engine), "round-robin", "a file edit applies here");
        assert_eq!(
            document().await.as_deref(),
            Some(edited.as_str()),
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
            .put_document(
                CONFIG_DOCUMENT,
                &format!("{STAMP}{later}\n{}", text("least-space", 1000)),
            )
            .await
            .unwrap();
        let task = tokio::spawn(reload_loop(
            engine.clone(),
            path.clone(),
            period,
            vars,
            true,
        ));
        settle().await;
        assert_eq!(strategy(&engine), "least-space");
        assert_eq!(
            document().await.as_deref(),
            Some(text("least-space", 1000).as_str()),
            "not overwritten"
        );
        task.abort();
    }

    #[tokio::test]
    async fn valid_changes_apply_and_invalid_ones_keep_the_running_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text("round-robin", 1000)).unwrap();
        let engine = Arc::new(shared::engine::Engine::new(
            Arc::new(load(&text("round-robin", 1000))),
            AnyStore::open(&MetadataBackend::Memory).unwrap(),
            native::BackendClient::new().unwrap(),
        ));
        let period = Duration::from_millis(20);
        let task = tokio::spawn(reload_loop(
            engine.clone(),
            path.clone(),
            period,
            vars,
            false,
        ));
        let settle = || tokio::time::sleep(period * 10);

        settle().await;
        assert_eq!(
            engine.config().server.port,
            1000,
            "unchanged file: nothing happens"
        );
        std::fs::write(&path, text("round-robin", 2000)).unwrap();
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
        std::fs::write(&path, text("round-robin", 3000)).unwrap();
        settle().await;
        assert_eq!(
            engine.config().server.port,
            3000,
            "and a fixed file applies again"
        );
        task.abort();
    }
}
