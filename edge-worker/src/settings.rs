//! What the Worker adds to the shared configuration: its own defaults and switches, read from
//! Worker vars. Pure, so it is unit-tested natively.

use shared::config::{Config, ConfigError, Warnings};

/// A Worker's request body limit on the Free and Pro plans (100 MB). Business allows 200 MB,
/// Enterprise 500 MB: set `api.max_body_bytes` in the config, or the var
/// `S3_BALANCE_MAX_BODY_BYTES`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1000 * 1000;

/// Subrequests one scheduled run may spend (Free plan: 50 per invocation, minus a margin).
pub const DEFAULT_SCAN_BUDGET: usize = 40;

/// How often an isolate re-reads the KV `config` key (hot switch), in milliseconds.
pub const CONFIG_RECHECK_MS: u64 = 5_000;

/// How often an isolate re-reads health, usage and operation counts, in milliseconds.
pub const STATE_REFRESH_MS: u64 = 10_000;

/// Switches read from Worker vars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// `S3_BALANCE_INDEX=off`: serving requests writes KV not at all.
    pub index: bool,
    /// `S3_BALANCE_MAX_BODY_BYTES`, used when the config sets no `api.max_body_bytes`.
    pub max_body_bytes: u64,
    /// `S3_BALANCE_SCAN_BUDGET`: subrequests per scheduled run.
    pub scan_budget: usize,
    /// `S3_BALANCE_TEST_ROUTES=1`: the `/__test/...` routes (never in production).
    pub test_routes: bool,
}

impl WorkerSettings {
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let flag_off = |v: Option<String>| {
            v.is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "off" | "0" | "false" | "no"
                )
            })
        };
        let flag_on = |v: Option<String>| {
            v.is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "on" | "1" | "true" | "yes"
                )
            })
        };
        Self {
            index: !flag_off(var("S3_BALANCE_INDEX")),
            max_body_bytes: var("S3_BALANCE_MAX_BODY_BYTES")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            scan_budget: var("S3_BALANCE_SCAN_BUDGET")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_SCAN_BUDGET),
            test_routes: flag_on(var("S3_BALANCE_TEST_ROUTES")),
        }
    }

    /// The Worker's defaults applied to a loaded config: the plan's body limit.
    pub fn apply(&self, config: &mut Config) {
        if config.api.max_body_bytes.is_none() {
            config.api.max_body_bytes = Some(self.max_body_bytes);
        }
    }
}

/// Loads a config text (YAML or TOML), after `${NAME}` references are replaced from `var`
/// (Worker secrets and vars).
pub fn load_config(
    text: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Warnings), ConfigError> {
    Config::from_text(None, text, var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_default_to_index_on_and_the_free_plan() {
        let s = WorkerSettings::from_vars(&|_| None);
        assert!(s.index && !s.test_routes);
        assert_eq!(s.max_body_bytes, 100_000_000);
        assert_eq!(s.scan_budget, 40);
    }

    #[test]
    fn switches_read_vars() {
        let vars = |k: &str| match k {
            "S3_BALANCE_INDEX" => Some("off".to_owned()),
            "S3_BALANCE_MAX_BODY_BYTES" => Some("200000000".to_owned()),
            "S3_BALANCE_TEST_ROUTES" => Some("1".to_owned()),
            _ => None,
        };
        let s = WorkerSettings::from_vars(&vars);
        assert!(!s.index && s.test_routes);
        assert_eq!(s.max_body_bytes, 200_000_000);
    }

    const MINIMAL: &str = "buckets:\n  - name: one\n    endpoint: http://127.0.0.1:9000\n    access_key_id: k\n    secret_access_key: ${SECRET}\n    enabled: true\n  - name: photos\n    virtual: true\n";

    #[test]
    fn the_plan_limit_applies_only_where_the_config_sets_none() {
        let vars = |k: &str| (k == "SECRET").then(|| "s3cr3t".to_owned());
        let settings = WorkerSettings::from_vars(&|_| None);
        let (mut config, _) = load_config(MINIMAL, &vars).unwrap();
        assert_eq!(
            config.backends[0].secret_key.expose(),
            "s3cr3t",
            "${{NAME}} comes from the Worker's secrets"
        );
        settings.apply(&mut config);
        assert_eq!(config.api.max_body_bytes, Some(DEFAULT_MAX_BODY_BYTES));
        let text = format!("{MINIMAL}s3api:\n  max_body_size: 5MB\n");
        let (mut config, _) = load_config(&text, &vars).unwrap();
        settings.apply(&mut config);
        assert_eq!(
            config.api.max_body_bytes,
            Some(5 * 1024 * 1024),
            "the config's own limit wins"
        );
    }

    #[test]
    fn a_missing_secret_is_an_error_naming_it() {
        let err = load_config(MINIMAL, &|_| None).unwrap_err();
        assert!(err.to_string().contains("SECRET"), "{err}");
    }
}
