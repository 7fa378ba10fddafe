//! The configuration document, shared by all runtimes: TOML or YAML, a superset of the Go
//! s3-balance `config.yaml`.
//!
//! [`Config::from_yaml`] / [`Config::from_toml`] parse the raw document (Go keys and the new
//! ones), validate it, and produce this normalized model, which the rest of the crate reads.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How objects are placed on backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    RoundRobin,
    LeastSpace,
    Weighted,
    ConsistentHash,
}

impl Strategy {
    /// The config spelling (`least-space` ...), also the `strategy` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastSpace => "least-space",
            Strategy::Weighted => "weighted",
            Strategy::ConsistentHash => "consistent-hash",
        }
    }
}

/// Whether data flows through the gateway or straight between client and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPathMode {
    Proxy,
    Redirect,
    /// Redirect only clients that follow redirects: presigned-URL and anonymous requests.
    Auto,
}

/// Where a virtual bucket's object lives inside a backend's real bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyLayout {
    /// `{bucket}/{key}`: many virtual buckets share the real buckets.
    BucketPrefixed,
    /// `{key}`: one virtual bucket adopts real buckets as they are.
    Plain,
}

impl KeyLayout {
    /// The prefix of every real key of `bucket` under this layout.
    pub fn prefix(self, bucket: &str) -> String {
        match self {
            KeyLayout::BucketPrefixed => format!("{bucket}/"),
            KeyLayout::Plain => String::new(),
        }
    }

    /// The length of [`KeyLayout::prefix`], without building it.
    pub fn prefix_len(self, bucket: &str) -> usize {
        match self {
            KeyLayout::BucketPrefixed => bucket.len() + 1,
            KeyLayout::Plain => 0,
        }
    }

    /// The key on a backend of `key` of `bucket`: `{bucket}/{key}` or `{key}`.
    pub fn real_key(self, bucket: &str, key: &str) -> String {
        match self {
            KeyLayout::BucketPrefixed => {
                let mut real = String::with_capacity(bucket.len() + 1 + key.len());
                real.push_str(bucket);
                real.push('/');
                real.push_str(key);
                real
            }
            KeyLayout::Plain => key.to_owned(),
        }
    }
}

/// Which store keeps the metadata index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataBackend {
    Sqlite {
        path: String,
    },
    DynamoDb {
        table: String,
    },
    /// PostgreSQL or MySQL/MariaDB, shared by several gateway instances (server only).
    Sql(SqlDatabase),
    Memory,
}

/// Which SQL server a [`SqlDatabase`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlKind {
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

/// A PostgreSQL or MySQL/MariaDB database holding the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlDatabase {
    pub kind: SqlKind,
    /// A URL (`postgres://user:pass@host/db`, `mysql://...`) or a DSN as the Go s3-balance's
    /// GORM drivers take it (`host=... user=... dbname=...`, `user:pass@tcp(host:3306)/db`).
    /// A secret: it usually carries the password.
    pub url: Secret,
    /// Pooled connections per gateway process; `None`: the store's default.
    pub max_connections: Option<u32>,
    /// Seconds a pooled connection lives before it is replaced; `None`: the store's default.
    pub max_lifetime_secs: Option<u64>,
}

/// One real bucket on one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique name; the Go config's bucket `name` (usually the real bucket name).
    pub name: String,
    /// The real bucket's name at the provider.
    pub bucket: String,
    /// `https://s3.us-east-1.amazonaws.com`, `http://127.0.0.1:9000` ...
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// Path-style addressing (`endpoint/bucket/key`) instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Capacity in bytes; `None` is unlimited.
    pub max_size: Option<u64>,
    pub weight: u32,
    pub enabled: bool,
    /// Serves reads, takes no new objects.
    pub read_only: bool,
    /// The provider honours `If-Match` on PutObject (412 or 404 when the stored ETag differs
    /// or the key is missing), as AWS S3, R2 and MinIO do (`conditional_writes`, new). An
    /// overwrite of an indexed key is then sent with the indexed ETag in `If-Match` instead
    /// of being confirmed by a HEAD first: one backend round trip instead of two. Off by
    /// default, since a provider that ignores the header would make a misdirected index
    /// entry undetectable. One that refuses it (501 `NotImplemented`) costs a second send.
    pub conditional_writes: bool,
    /// Monthly class A (writes, lists) and class B (reads) operation budgets.
    pub limit_class_a: Option<u64>,
    pub limit_class_b: Option<u64>,
}

/// A bucket clients see.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualBucketConfig {
    pub name: String,
    /// Backend names this bucket places on, in config order; all backends when the config
    /// lists none.
    pub backends: Vec<String>,
    /// Anonymous GET/HEAD/List allowed.
    pub anonymous_read: bool,
    /// CORS rules (`cors`, new): browsers on other origins may use the bucket as they allow.
    pub cors: Vec<crate::cors::CorsRule>,
    pub reads: DataPathMode,
    pub writes: DataPathMode,
    pub key_layout: KeyLayout,
}

impl VirtualBucketConfig {
    /// Whether backend `name` is in this bucket's pool (every backend is when none is listed).
    pub fn has_backend(&self, name: &str) -> bool {
        self.backends.is_empty() || self.backends.iter().any(|b| b == name)
    }
}

/// An access key of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialConfig {
    pub access_key: String,
    pub secret_key: Secret,
    /// Virtual buckets this key may use; `None` is all.
    pub buckets: Option<Vec<String>>,
    pub read_only: bool,
    /// May use the admin API (and its console): see [`AdminConfig`].
    pub admin: bool,
}

/// The admin API and web console (`admin` section, new). Every call needs a credential marked
/// `admin` (SigV4) or the bearer token; never anonymous. The default prefix starts with `_`,
/// which no bucket name can, so it never hides a bucket (the Go project's `/api` would hide a
/// bucket named `api`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub enabled: bool,
    /// The console is served here, the API under `{prefix}/api/`.
    pub prefix: String,
    /// `Authorization: Bearer <token>` is accepted as an admin when set.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "/_admin".to_owned(),
            token: None,
        }
    }
}

/// The self-hosted server's listener and its defences against slow or idle clients. Every
/// timeout is an inactivity or phase deadline, never a whole-request one: bodies stream, and a
/// large upload may rightly take hours.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// A request's headers must arrive whole within this, counted from the connection's accept
    /// or from the first byte of a later request (`read_header_timeout`, Go's
    /// `http.Server.ReadHeaderTimeout`).
    pub read_header_timeout: Duration,
    /// The longest pause within a request body (`read_timeout`). Go's is a deadline for the
    /// whole request; here it is an inactivity timeout.
    pub read_timeout: Duration,
    /// The longest the client may leave the response unread (`write_timeout`; Go: a deadline
    /// for the whole response).
    pub write_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (`idle_timeout`, as Go).
    pub idle_timeout: Duration,
    /// Client connections open at once, at most (also capped by the open-files limit). At the
    /// limit the longest-idle connection is closed to make room, or, when every connection is
    /// busy, the new one is answered `503 SlowDown` and closed.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    /// The defaults of an absent key (Go's `SetDefaults` for the Go keys).
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            shutdown_timeout: Duration::from_secs(30),
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The HTTP client to the backends (server and Lambda): how long it waits before it gives a
/// backend up, so a hung provider fails requests fast instead of holding them.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendClientConfig {
    /// TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// From the request sent (its body included) to the response headers.
    pub first_byte_timeout: Duration,
    /// The longest pause in a body streaming to or from a backend.
    pub stall_timeout: Duration,
}

impl Default for BackendClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    pub strategy: Strategy,
    pub health_check_period: Duration,
    pub update_stats_period: Duration,
    pub retry_attempts: u32,
    pub retry_delay: Duration,
    /// Successive good probes before an unhealthy backend is healthy again.
    pub rise: u32,
    /// Successive failed probes before a healthy backend is unhealthy.
    pub fall: u32,
    pub probe_timeout: Duration,
    /// Passive health: transport failures or timeouts in a row that mark a backend down at
    /// once (its circuit opens: requests needing it answer 503 without waiting).
    pub circuit_failures: u32,
    /// While a circuit is open, one request is let through this often to try the backend
    /// again; a successful health probe closes it too.
    pub circuit_retry: Duration,
    /// A new object up to this many bytes is kept in memory while it is sent, so that a write
    /// failing on one backend moves to the next in placement order (`retry_attempts` times).
    pub retry_buffer: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub path: String,
    /// Bearer token required on `/metrics` when set.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub auth_required: bool,
    pub credentials: Vec<CredentialConfig>,
    /// Virtual-host buckets: `bucket.<base domain>`.
    pub virtual_host: bool,
    pub base_domains: Vec<String>,
    /// CreateBucket makes a new virtual bucket over all backends.
    pub allow_create_bucket: bool,
    /// 307 (default) or 302.
    pub redirect_status: u16,
    /// Lifetime of presigned backend URLs handed out by redirects.
    pub presign_expiry: Duration,
    /// Refuse request bodies larger than this before any backend is touched (platform limits).
    pub max_body_bytes: Option<u64>,
    /// Key that authenticates multipart UploadIds handed to clients.
    pub upload_id_secret: Secret,
}

/// The whole normalized configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub backend_client: BackendClientConfig,
    pub backends: Vec<BackendConfig>,
    pub virtual_buckets: Vec<VirtualBucketConfig>,
    pub balancer: BalancerConfig,
    pub metrics: MetricsConfig,
    pub api: ApiConfig,
    pub admin: AdminConfig,
    pub metadata: MetadataBackend,
    /// Defaults for virtual buckets created at run time.
    pub default_reads: DataPathMode,
    pub default_writes: DataPathMode,
    pub default_key_layout: KeyLayout,
}

/// A problem found while loading: names the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

/// Non-fatal notes from loading (an ignored `database` section ...), for the adapter to log.
pub type Warnings = Vec<String>;

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Loads a YAML document (the Go s3-balance `config.yaml`, or ours).
    pub fn from_yaml(text: &str) -> Result<(Config, Warnings), ConfigError> {
        let tree: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::new("yaml", e.to_string()))?;
        load_tree(tree)
    }

    /// Loads a TOML document with the same keys as the YAML one.
    pub fn from_toml(text: &str) -> Result<(Config, Warnings), ConfigError> {
        let tree: Value = toml::from_str(text)
            .map_err(|e| ConfigError::new("toml", e.to_string().trim_end().to_owned()))?;
        load_tree(tree)
    }

    /// The one rule every runtime reads a config document by. `${NAME}` references are first
    /// replaced from `var` (environment, Worker secrets and vars). Then a `name` ending in
    /// `.toml` is TOML and one ending in `.yaml` or `.yml` is YAML; a document without such a
    /// name (the Worker's KV key, the Lambda's DynamoDB item and environment variable) is
    /// TOML when it parses as TOML, else YAML: a YAML mapping (`key: value`) is never TOML.
    pub fn from_text(
        name: Option<&str>,
        text: &str,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, Warnings), ConfigError> {
        let text = expand_env(text, var)?;
        let extension = name
            .and_then(|n| n.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase());
        match extension.as_deref() {
            Some("toml") => Self::from_toml(&text),
            Some("yaml" | "yml") => Self::from_yaml(&text),
            _ => match Self::from_toml(&text) {
                Err(e) if e.key == "toml" => Self::from_yaml(&text),
                other => other,
            },
        }
    }

    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn virtual_bucket(&self, name: &str) -> Option<&VirtualBucketConfig> {
        self.virtual_buckets.iter().find(|b| b.name == name)
    }

    /// The virtual bucket as configured, or as created at run time with the defaults.
    pub fn bucket_or_default(&self, name: &str) -> VirtualBucketConfig {
        self.virtual_bucket(name)
            .cloned()
            .unwrap_or_else(|| VirtualBucketConfig {
                name: name.to_owned(),
                backends: Vec::new(),
                anonymous_read: false,
                cors: Vec::new(),
                reads: self.default_reads,
                writes: self.default_writes,
                key_layout: self.default_key_layout,
            })
    }

    /// Backends a virtual bucket places on.
    pub fn pool<'a>(&'a self, bucket: &VirtualBucketConfig) -> Vec<&'a BackendConfig> {
        if bucket.backends.is_empty() {
            self.backends.iter().collect()
        } else {
            bucket
                .backends
                .iter()
                .filter_map(|n| self.backend(n))
                .collect()
        }
    }

    /// What changing to `next` takes from objects already written: a backend leaving a
    /// configured bucket's pool keeps that bucket's objects, which are then read (and
    /// overwritten and deleted) through the index but no longer listed, until a drain moves
    /// them into the pool; a backend leaving the config leaves its objects unreachable (503:
    /// neither found nor forgotten), and a bucket's new key layout leaves them unseen. Said as warnings when a changed config is applied:
    /// the operator may have meant it, and `drain` works before or after the change.
    pub fn change_warnings(&self, next: &Config) -> Warnings {
        let mut warnings = Vec::new();
        for bucket in &next.virtual_buckets {
            if let Some(before) = self.virtual_bucket(&bucket.name) {
                if before.key_layout != bucket.key_layout {
                    warnings.push(format!(
                        "bucket {:?} changed its key layout: objects written before are stored under their old keys ({}), which the gateway no longer looks at",
                        bucket.name,
                        before.key_layout.real_key(&bucket.name, "{key}")
                    ));
                }
            }
        }
        for backend in &self.backends {
            let name = &backend.name;
            if next.backend(name).is_none() {
                warnings.push(format!(
                    "backend {name:?} is no longer configured: reads and deletes of objects on it answer 503 until it is configured again (then `s3-balance drain {name}` moves them), or until a reindex forgets them"
                ));
                continue;
            }
            for bucket in &next.virtual_buckets {
                let was_in = self
                    .virtual_bucket(&bucket.name)
                    .is_some_and(|before| before.has_backend(name));
                if was_in && !bucket.has_backend(name) {
                    warnings.push(format!(
                        "backend {name:?} left the pool of bucket {:?}: objects of the bucket on it are read through the index but not listed until `s3-balance drain {name}` moves them into the pool",
                        bucket.name
                    ));
                }
            }
        }
        warnings
    }

    pub fn credential(&self, access_key: &str) -> Option<&CredentialConfig> {
        self.api
            .credentials
            .iter()
            .find(|c| c.access_key == access_key)
    }
}

/// Parses sizes as the Go config writes them: `100`, `100B`, `10KB`, `5MB`, `1.5GB`, `2TB`
/// (powers of 1024, case-insensitive, optional space before the unit; `K`, `M`, `G`, `T`
/// alone as the Go parser also takes). A plain number is bytes; a fraction of a byte is
/// dropped.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (use B, KB, MB, GB or TB)");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let shift: u32 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return Err(bad());
    }
    // Exact integer arithmetic: "1.5GB" is exactly 1.5 * 2^30 bytes.
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mult = 1u128 << shift;
    let mut bytes = int.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        bytes += digits * mult / 10u128.pow(frac.len() as u32);
    }
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

/// Parses a Go duration: `500ms`, `30s`, `5m`, `1h30m`, `1.5h`, `0` (units ns, us, µs, ms, s,
/// m, h). A bare number is refused: Go would read it as nanoseconds, which nobody means.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration (write e.g. \"500ms\", \"30s\", \"5m\", \"1h30m\")");
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(n_end);
        let number: f64 = number.parse().map_err(|_| bad())?;
        rest = after;
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(u_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = after;
        nanos += number * scale;
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Replaces every `${NAME}` in `text` with `lookup(NAME)`, before the text is parsed: secrets
/// come from `wrangler secret`, the Lambda environment or the server's environment instead of
/// the file. `$${` writes a literal `${`. Comments (`#` at the start of a line or after a
/// space, outside quotes) are left as they are, so a commented-out `${OLD_KEY}` needs no
/// variable. A name that `lookup` does not know is an error naming it and its line. Values are
/// inserted as they are (quote them in YAML where they need it).
pub fn expand_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line).unwrap_or(line.len());
        let (code, comment) = line.split_at(code_end);
        expand_line(code, n + 1, lookup, &mut out)?;
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a `#` comment starts on one line of YAML or TOML, outside '...' and "..." strings.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return Some(i),
            None => {}
        }
        prev = c;
    }
    None
}

fn expand_line(
    code: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), ConfigError> {
    let key = || format!("line {line}");
    let mut rest = code;
    while let Some(at) = rest.find('$') {
        let (before, tail) = rest.split_at(at);
        out.push_str(before);
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let (name, after) = after
                .split_once('}')
                .ok_or_else(|| ConfigError::new(key(), "`${` is not closed by `}`"))?;
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::new(
                    key(),
                    format!("`${{{name}}}` is not an environment variable name"),
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                ConfigError::new(key(), format!("environment variable {name} is not set"))
            })?;
            out.push_str(&value);
            rest = after;
        } else {
            out.push('$');
            rest = tail.strip_prefix('$').unwrap_or_default();
        }
    }
    out.push_str(rest);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Loading. Both formats are parsed into one JSON-like tree and read by hand, so that every
// error names its key path (`buckets[2].max_size`) and TOML and YAML mean exactly the same.

const STRATEGIES: &str = "round-robin, least-space, weighted or consistent-hash";

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: &Value) -> String {
    v.to_string()
}

/// One mapping of the document with its key path; `done` refuses keys nobody read.
struct Section<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Section<'a> {
    fn new(path: &str, value: Option<&'a Value>) -> Result<Self, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(Self {
                path: path.to_owned(),
                map: None,
            }),
            Some(Value::Object(map)) => Ok(Self {
                path: path.to_owned(),
                map: Some(map),
            }),
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected a mapping of keys, found {}", show(other)),
            )),
        }
    }

    fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; YAML's `key:` with nothing (null) counts as absent, as in Go.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Refuses keys not in `allowed`: a typo must not be silently ignored.
    fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        let Some(map) = self.map else { return Ok(()) };
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(ConfigError::new(
                    self.key(k),
                    format!("unknown key (known here: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Go's yaml decodes a number into a string field; so do we.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a string, found {}", show(v)),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected true or false, found {}", show(v)),
            )),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a whole number >= 0, found {}", show(v)),
            )),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s)
                .map(Some)
                .map_err(|p| ConfigError::new(self.key(key), p)),
            Some(Value::Number(n)) => Err(ConfigError::new(
                self.key(key),
                format!("{n} has no unit (write e.g. \"{n}s\", \"500ms\", \"5m\")"),
            )),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a duration such as \"30s\", found {}", show(v)),
            )),
        }
    }

    /// A size such as "10GB" or a number of bytes; empty and 0 are `None` (unlimited), as in Go.
    fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        let bytes = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => {
                parse_size(s).map_err(|p| ConfigError::new(self.key(key), p))?
            }
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| ConfigError::new(self.key(key), format!("{n} is not a size")))?,
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a size such as \"10GB\", found {}", show(v)),
            ))?,
        };
        Ok((bytes > 0).then_some(bytes))
    }

    fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ConfigError::new(
                        format!("{}[{i}]", self.key(key)),
                        format!("expected a string, found {}", show(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a list, found {}", show(v)),
            )),
        }
    }

    fn list(&self, key: &str) -> Result<Vec<(String, &'a Value)>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", self.key(key)), v))
                .collect()),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                format!("expected a list, found {}", show(v)),
            )),
        }
    }

    fn section(&self, key: &str) -> Result<Section<'a>, ConfigError> {
        Section::new(&self.key(key), self.get(key))
    }

    fn mode(&self, key: &str) -> Result<Option<DataPathMode>, ConfigError> {
        match self.string(key)?.as_deref() {
            None => Ok(None),
            Some("proxy") => Ok(Some(DataPathMode::Proxy)),
            Some("redirect") => Ok(Some(DataPathMode::Redirect)),
            Some("auto") => Ok(Some(DataPathMode::Auto)),
            Some(other) => Err(ConfigError::new(
                self.key(key),
                format!("{other:?} is not a mode (use proxy, redirect or auto)"),
            )),
        }
    }

    fn layout(&self, key: &str) -> Result<Option<KeyLayout>, ConfigError> {
        match self.string(key)?.as_deref() {
            None => Ok(None),
            Some("{bucket}/{key}") => Ok(Some(KeyLayout::BucketPrefixed)),
            Some("{key}") => Ok(Some(KeyLayout::Plain)),
            Some(other) => Err(ConfigError::new(
                self.key(key),
                format!(
                    "{other:?} is not a key layout (use \"{{bucket}}/{{key}}\" or \"{{key}}\")"
                ),
            )),
        }
    }
}

fn load_tree(tree: Value) -> Result<(Config, Warnings), ConfigError> {
    let mut warnings = Warnings::new();
    let root = match &tree {
        // An empty document: everything defaults (and then fails for want of backends).
        Value::Null => Section {
            path: String::new(),
            map: None,
        },
        Value::Object(_) => Section::new("", Some(&tree))?,
        other => {
            return Err(ConfigError::new(
                "(document)",
                format!("expected a mapping of keys, found {}", show(other)),
            ))
        }
    };
    root.only(&[
        "server",
        "backend_client",
        "database",
        "buckets",
        "balancer",
        "metrics",
        "s3api",
        "data_path",
        "metadata",
        "admin",
    ])?;

    let server = load_server(&root.section("server")?)?;
    let backend_client = load_backend_client(&root.section("backend_client")?)?;
    let balancer = load_balancer(&root.section("balancer")?)?;
    let metrics = load_metrics(&root.section("metrics")?, &mut warnings)?;
    let admin = load_admin(&root.section("admin")?)?;
    let metadata = if root.has("metadata") || !root.has("database") {
        if root.has("database") {
            warnings.push("database: ignored; `metadata` chooses the store".to_owned());
        }
        load_metadata(&root.section("metadata")?, &mut warnings)?
    } else {
        load_go_database(&root.section("database")?, &mut warnings)?
    };

    // Data path defaults: `data_path` wins; otherwise the Go `s3api.proxy_mode`: true proxies
    // everything; false redirects reads, and writes are still proxied, as the Go s3-balance
    // does (it streams PUT bodies itself and never redirects uploads).
    let s3api = root.section("s3api")?;
    let data_path = root.section("data_path")?;
    data_path.only(&["reads", "writes", "key_layout"])?;
    let (go_reads, go_writes) = match s3api.bool("proxy_mode")? {
        Some(false) => (DataPathMode::Redirect, DataPathMode::Proxy),
        _ => (DataPathMode::Proxy, DataPathMode::Proxy),
    };
    let default_reads = data_path.mode("reads")?.unwrap_or(go_reads);
    let default_writes = data_path.mode("writes")?.unwrap_or(go_writes);
    let default_key_layout = data_path
        .layout("key_layout")?
        .unwrap_or(KeyLayout::BucketPrefixed);

    let (backends, virtual_buckets) = load_buckets(
        &root,
        default_reads,
        default_writes,
        default_key_layout,
        &mut warnings,
    )?;
    let api = load_api(&s3api, &backends, &virtual_buckets, &mut warnings)?;

    if weighted_without_weight(balancer.strategy, &backends) {
        return Err(ConfigError::new(
            "balancer.strategy",
            "\"weighted\" needs at least one enabled backend with weight > 0 (all have weight 0)",
        ));
    }
    if !backends.iter().any(|b| b.enabled) {
        warnings.push(
            "buckets: every real bucket is disabled; writes will fail with 507 InsufficientStorage"
                .to_owned(),
        );
    }
    if virtual_buckets.is_empty() && !api.allow_create_bucket {
        warnings.push(
            "buckets: no virtual bucket (virtual: true) is configured and s3api.allow_create_bucket is \
             false: clients have no bucket to use"
                .to_owned(),
        );
    }
    if !api.auth_required {
        warnings.push(
            "s3api.auth_required is false: anyone who reaches the gateway can read and write"
                .to_owned(),
        );
    }

    let config = Config {
        server,
        backend_client,
        backends,
        virtual_buckets,
        balancer,
        metrics,
        api,
        admin,
        metadata,
        default_reads,
        default_writes,
        default_key_layout,
    };
    Ok((config, warnings))
}

fn load_server(s: &Section<'_>) -> Result<ServerConfig, ConfigError> {
    s.only(&[
        "host",
        "port",
        "read_timeout",
        "write_timeout",
        "idle_timeout",
        "shutdown_timeout",
        "read_header_timeout",
        "max_connections",
    ])?;
    let defaults = ServerConfig::default();
    let host = s
        .string("host")?
        .filter(|h| !h.is_empty())
        .unwrap_or(defaults.host);
    let port = match s.uint("port")? {
        None => defaults.port,
        Some(0) => {
            return Err(ConfigError::new(
                s.key("port"),
                "0 is not a port (use 1 to 65535)",
            ))
        }
        Some(p) => u16::try_from(p).map_err(|_| {
            ConfigError::new(s.key("port"), format!("{p} is not a port (use 1 to 65535)"))
        })?,
    };
    // Go's rule: zero (or absent) means the default.
    let timeout = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(s.duration(key)?.filter(|d| !d.is_zero()).unwrap_or(default))
    };
    let max_connections = match s.uint("max_connections")? {
        None | Some(0) => defaults.max_connections,
        Some(n) => usize::try_from(n)
            .map_err(|_| ConfigError::new(s.key("max_connections"), format!("{n} is too large")))?,
    };
    Ok(ServerConfig {
        host,
        port,
        shutdown_timeout: s
            .duration("shutdown_timeout")?
            .unwrap_or(defaults.shutdown_timeout),
        read_header_timeout: timeout("read_header_timeout", defaults.read_header_timeout)?,
        read_timeout: timeout("read_timeout", defaults.read_timeout)?,
        write_timeout: timeout("write_timeout", defaults.write_timeout)?,
        idle_timeout: timeout("idle_timeout", defaults.idle_timeout)?,
        max_connections,
    })
}

fn load_backend_client(s: &Section<'_>) -> Result<BackendClientConfig, ConfigError> {
    s.only(&["connect_timeout", "first_byte_timeout", "stall_timeout"])?;
    let defaults = BackendClientConfig::default();
    let timeout = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(s.duration(key)?.filter(|d| !d.is_zero()).unwrap_or(default))
    };
    Ok(BackendClientConfig {
        connect_timeout: timeout("connect_timeout", defaults.connect_timeout)?,
        first_byte_timeout: timeout("first_byte_timeout", defaults.first_byte_timeout)?,
        stall_timeout: timeout("stall_timeout", defaults.stall_timeout)?,
    })
}

fn load_balancer(s: &Section<'_>) -> Result<BalancerConfig, ConfigError> {
    s.only(&[
        "strategy",
        "health_check_period",
        "update_stats_period",
        "retry_attempts",
        "retry_delay",
        "rise",
        "fall",
        "probe_timeout",
        "circuit_failures",
        "circuit_retry",
        "retry_buffer",
    ])?;
    // The Go defaults (SetDefaults), including its rule that a zero value means "default".
    let strategy = match s.string("strategy")?.as_deref() {
        None | Some("") | Some("least-space") => Strategy::LeastSpace,
        Some("round-robin") => Strategy::RoundRobin,
        Some("weighted") => Strategy::Weighted,
        Some("consistent-hash") => Strategy::ConsistentHash,
        Some(other) => {
            return Err(ConfigError::new(
                s.key("strategy"),
                format!("{other:?} is not a strategy (use {STRATEGIES})"),
            ))
        }
    };
    let nonzero =
        |d: Option<Duration>, default: Duration| d.filter(|d| !d.is_zero()).unwrap_or(default);
    let at_least_one = |key: &str, default: u64| -> Result<u32, ConfigError> {
        match s.uint(key)? {
            None => Ok(default as u32),
            Some(n) if (1..=1000).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::new(
                s.key(key),
                format!("{n} is out of range (use 1 to 1000)"),
            )),
        }
    };
    let probe_timeout = nonzero(s.duration("probe_timeout")?, Duration::from_secs(5));
    Ok(BalancerConfig {
        strategy,
        health_check_period: nonzero(s.duration("health_check_period")?, Duration::from_secs(30)),
        update_stats_period: nonzero(s.duration("update_stats_period")?, Duration::from_secs(60)),
        retry_attempts: match s.uint("retry_attempts")? {
            None | Some(0) => 3,
            Some(n) => u32::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
                ConfigError::new(
                    s.key("retry_attempts"),
                    format!("{n} is out of range (use 1 to 100)"),
                )
            })?,
        },
        retry_delay: nonzero(s.duration("retry_delay")?, Duration::from_secs(1)),
        rise: at_least_one("rise", 2)?,
        fall: at_least_one("fall", 3)?,
        probe_timeout,
        circuit_failures: at_least_one("circuit_failures", 3)?,
        circuit_retry: nonzero(s.duration("circuit_retry")?, Duration::from_secs(10)),
        retry_buffer: s.size("retry_buffer")?.unwrap_or(1024 * 1024),
    })
}

fn load_metrics(s: &Section<'_>, warnings: &mut Warnings) -> Result<MetricsConfig, ConfigError> {
    s.only(&["enabled", "path", "port", "token"])?;
    if s.has("port") {
        s.uint("port")?;
        warnings.push(format!(
            "{}: ignored; metrics are served on the main port",
            s.key("port")
        ));
    }
    let path = s
        .string("path")?
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/metrics".to_owned());
    if !path.starts_with('/') {
        return Err(ConfigError::new(
            s.key("path"),
            format!("{path:?} must start with /"),
        ));
    }
    let token = s
        .string("token")?
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(MetricsConfig {
        enabled: s.bool("enabled")?.unwrap_or(false),
        path,
        token,
    })
}

/// The weighted strategy with every enabled backend at weight 0: nothing to choose from. A
/// config (and an admin change) that says so is refused.
pub(crate) fn weighted_without_weight(strategy: Strategy, backends: &[BackendConfig]) -> bool {
    strategy == Strategy::Weighted && backends.iter().filter(|b| b.enabled).all(|b| b.weight == 0)
}

/// A virtual bucket's `cors` rules, checked as PutBucketCors checks them.
fn load_cors(b: &Section<'_>) -> Result<Vec<crate::cors::CorsRule>, ConfigError> {
    let mut rules = Vec::new();
    for (path, value) in b.list("cors")? {
        let r = Section::new(&path, Some(value))?;
        r.only(&[
            "id",
            "allowed_origins",
            "allowed_methods",
            "allowed_headers",
            "expose_headers",
            "max_age_seconds",
        ])?;
        let rule = crate::cors::CorsRule {
            id: r.string("id")?,
            allowed_origins: r.string_list("allowed_origins")?.unwrap_or_default(),
            allowed_methods: r.string_list("allowed_methods")?.unwrap_or_default(),
            allowed_headers: r.string_list("allowed_headers")?.unwrap_or_default(),
            expose_headers: r.string_list("expose_headers")?.unwrap_or_default(),
            max_age_seconds: match r.uint("max_age_seconds")? {
                None => None,
                Some(n) => Some(
                    u32::try_from(n)
                        .map_err(|_| ConfigError::new(r.key("max_age_seconds"), "is too large"))?,
                ),
            },
        };
        rule.validate()
            .map_err(|e| ConfigError::new(path.clone(), e.message))?;
        rules.push(rule);
    }
    Ok(rules)
}

fn load_admin(s: &Section<'_>) -> Result<AdminConfig, ConfigError> {
    s.only(&["enabled", "prefix", "token"])?;
    let defaults = AdminConfig::default();
    let prefix = s
        .string("prefix")?
        .filter(|p| !p.is_empty())
        .unwrap_or(defaults.prefix);
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
        return Err(ConfigError::new(
            s.key("prefix"),
            format!("{prefix:?} must start with / and not end with / (e.g. \"/_admin\")"),
        ));
    }
    Ok(AdminConfig {
        enabled: s.bool("enabled")?.unwrap_or(defaults.enabled),
        prefix,
        token: s
            .string("token")?
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// `type: postgres|mysql` (and their aliases) as a [`SqlKind`].
fn sql_kind(kind: Option<&str>) -> Option<SqlKind> {
    match kind? {
        "postgres" | "postgresql" => Some(SqlKind::Postgres),
        "mysql" | "mariadb" => Some(SqlKind::MySql),
        _ => None,
    }
}

/// A pool size: at least one connection.
fn max_connections(s: &Section<'_>, key: &str) -> Result<Option<u32>, ConfigError> {
    match s.uint(key)? {
        None => Ok(None),
        Some(n) if (1..=10_000).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(ConfigError::new(
            s.key(key),
            format!("{n} connections: use 1 to 10000"),
        )),
    }
}

/// The Go s3-balance's `database` section (GORM: sqlite, mysql, postgres), used when there
/// is no `metadata` section: the same database type, with `dsn` as its GORM driver takes it.
fn load_go_database(
    s: &Section<'_>,
    warnings: &mut Warnings,
) -> Result<MetadataBackend, ConfigError> {
    s.only(&[
        "type",
        "dsn",
        "max_open_conns",
        "max_idle_conns",
        "conn_max_lifetime",
        "log_level",
        "auto_migrate",
    ])?;
    if s.bool("auto_migrate")? == Some(false) {
        warnings.push(format!(
            "{}: ignored; the schema is always created and migrated at start",
            s.key("auto_migrate")
        ));
    }
    let dsn = s.string("dsn")?.filter(|d| !d.trim().is_empty());
    let kind = s.string("type")?;
    if let Some(kind) = sql_kind(kind.as_deref()) {
        let url = dsn.ok_or_else(|| ConfigError::new(s.key("dsn"), "required for this type"))?;
        return Ok(MetadataBackend::Sql(SqlDatabase {
            kind,
            url: Secret::new(url),
            // Go takes 0 as "unlimited": the store's default then.
            max_connections: match s.uint("max_open_conns")? {
                None | Some(0) => None,
                Some(_) => max_connections(s, "max_open_conns")?,
            },
            max_lifetime_secs: s.uint("conn_max_lifetime")?.filter(|n| *n > 0),
        }));
    }
    match kind.as_deref() {
        None | Some("") | Some("sqlite") => Ok(MetadataBackend::Sqlite {
            path: dsn.unwrap_or_else(|| "data/s3-balance.db".to_owned()),
        }),
        Some(other) => Err(ConfigError::new(
            s.key("type"),
            format!("{other:?} is not a database type (use sqlite, mysql or postgres)"),
        )),
    }
}

fn load_metadata(s: &Section<'_>, warnings: &mut Warnings) -> Result<MetadataBackend, ConfigError> {
    s.only(&["type", "path", "table", "url", "max_connections"])?;
    let path = s.string("path")?;
    let table = s.string("table")?;
    let unused = |key: &str, kind: &str| format!("{}: ignored for type {kind}", s.key(key));
    let kind = s.string("type")?;
    if let Some(sql) = sql_kind(kind.as_deref()) {
        for key in ["path", "table"] {
            if s.has(key) {
                warnings.push(unused(key, kind.as_deref().unwrap_or_default()));
            }
        }
        let url = s
            .string("url")?
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ConfigError::new(s.key("url"), "required for this type"))?;
        return Ok(MetadataBackend::Sql(SqlDatabase {
            kind: sql,
            url: Secret::new(url),
            max_connections: max_connections(s, "max_connections")?,
            max_lifetime_secs: None,
        }));
    }
    for key in ["url", "max_connections"] {
        if s.has(key) {
            warnings.push(unused(key, kind.as_deref().unwrap_or("sqlite")));
        }
    }
    Ok(match kind.as_deref() {
        None | Some("sqlite") => {
            if table.is_some() {
                warnings.push(unused("table", "sqlite"));
            }
            MetadataBackend::Sqlite {
                path: path
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "data/s3-balance.db".to_owned()),
            }
        }
        Some("dynamodb") => {
            if path.is_some() {
                warnings.push(unused("path", "dynamodb"));
            }
            MetadataBackend::DynamoDb {
                table: table
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "s3-balance".to_owned()),
            }
        }
        Some("memory") => {
            for key in ["path", "table"] {
                if s.has(key) {
                    warnings.push(unused(key, "memory"));
                }
            }
            MetadataBackend::Memory
        }
        Some(other) => {
            return Err(ConfigError::new(
                s.key("type"),
                format!(
                    "{other:?} is not a metadata store (use sqlite, postgres, mysql, dynamodb or memory)"
                ),
            ))
        }
    })
}

const REAL_KEYS: [&str; 15] = [
    "name",
    "virtual",
    "enabled",
    "bucket",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "max_size",
    "weight",
    "path_style",
    "use_ssl",
    "read_only",
    "conditional_writes",
    "operation_limits",
];

/// Go keys a virtual entry carries in the Go examples (with empty or display-only values).
const VIRTUAL_GO_KEYS: [&str; 9] = [
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "max_size",
    "weight",
    "path_style",
    "use_ssl",
    "operation_limits",
];

fn load_buckets(
    root: &Section<'_>,
    default_reads: DataPathMode,
    default_writes: DataPathMode,
    default_key_layout: KeyLayout,
    warnings: &mut Warnings,
) -> Result<(Vec<BackendConfig>, Vec<VirtualBucketConfig>), ConfigError> {
    let entries = root.list("buckets")?;
    let mut names: Vec<(String, String)> = Vec::new(); // (name, path)
    let mut backends = Vec::new();
    // (path, raw backends list) kept to check pools once every real bucket is known.
    let mut virtuals: Vec<(String, VirtualBucketConfig)> = Vec::new();

    for (path, value) in &entries {
        let b = Section::new(path, Some(value))?;
        let name = b
            .string("name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ConfigError::new(b.key("name"), "is required"))?;
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
            return Err(ConfigError::new(
                b.key("name"),
                format!("{name:?} is already used by {first}"),
            ));
        }
        names.push((name.clone(), path.clone()));
        let enabled = b.bool("enabled")?.unwrap_or(true);

        if b.bool("virtual")?.unwrap_or(false) {
            let mut allowed: Vec<&str> = vec![
                "name",
                "virtual",
                "enabled",
                "backends",
                "anonymous_read",
                "cors",
                "reads",
                "writes",
                "key_layout",
            ];
            allowed.extend(VIRTUAL_GO_KEYS);
            b.only(&allowed)?;
            let vb = VirtualBucketConfig {
                name: name.clone(),
                backends: b.string_list("backends")?.unwrap_or_default(),
                anonymous_read: b.bool("anonymous_read")?.unwrap_or(false),
                cors: load_cors(&b)?,
                reads: b.mode("reads")?.unwrap_or(default_reads),
                writes: b.mode("writes")?.unwrap_or(default_writes),
                key_layout: b.layout("key_layout")?.unwrap_or(default_key_layout),
            };
            if !enabled {
                // The Go s3-balance skips disabled entries entirely: the bucket does not exist.
                warnings.push(format!(
                    "{path}: virtual bucket {name:?} is disabled and not served"
                ));
                continue;
            }
            if root.has("database")
                && !b.has("key_layout")
                && vb.key_layout == KeyLayout::BucketPrefixed
            {
                warnings.push(format!(
                    "{path}: virtual bucket {name:?} stores objects under \"{name}/<key>\"; the Go \
                     s3-balance stored them under their plain key: set key_layout: \"{{key}}\" to \
                     serve objects it wrote"
                ));
            }
            virtuals.push((path.clone(), vb));
            continue;
        }

        b.only(&REAL_KEYS)?;
        let region = b
            .string("region")?
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = match b
            .string("endpoint")?
            .map(|e| e.trim().trim_end_matches('/').to_owned())
        {
            // Empty: AWS's own endpoint for the region, as the AWS SDK of the Go project uses.
            None => format!("https://s3.{region}.amazonaws.com"),
            Some(e) if e.is_empty() => format!("https://s3.{region}.amazonaws.com"),
            Some(e) if e.starts_with("http://") || e.starts_with("https://") => e,
            Some(e) if e.contains("://") => {
                return Err(ConfigError::new(
                    b.key("endpoint"),
                    format!("{e:?} must start with http:// or https://"),
                ))
            }
            // A bare host: the old Go key `use_ssl` picks the scheme.
            Some(e) => {
                let scheme = if b.bool("use_ssl")?.unwrap_or(true) {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{e}")
            }
        };
        b.bool("use_ssl")?;
        let access_key = b.string("access_key_id")?.filter(|k| !k.is_empty());
        let secret_key = b.string("secret_access_key")?.filter(|k| !k.is_empty());
        let access_key = access_key.ok_or_else(|| {
            ConfigError::new(b.key("access_key_id"), "is required for a real bucket")
        })?;
        let secret_key = secret_key.ok_or_else(|| {
            ConfigError::new(b.key("secret_access_key"), "is required for a real bucket")
        })?;
        let weight = match b.uint("weight")? {
            None => 1,
            Some(w) => u32::try_from(w)
                .map_err(|_| ConfigError::new(b.key("weight"), format!("{w} is too large")))?,
        };
        let limits = b.section("operation_limits")?;
        limits.only(&["type_a", "type_b"])?;
        backends.push(BackendConfig {
            bucket: b
                .string("bucket")?
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            endpoint,
            region,
            access_key,
            secret_key: Secret::new(secret_key),
            path_style: b.bool("path_style")?.unwrap_or(false),
            max_size: b.size("max_size")?,
            weight,
            enabled,
            read_only: b.bool("read_only")?.unwrap_or(false),
            conditional_writes: b.bool("conditional_writes")?.unwrap_or(false),
            // 0 is "no limit" in the Go config.
            limit_class_a: limits.uint("type_a")?.filter(|n| *n > 0),
            limit_class_b: limits.uint("type_b")?.filter(|n| *n > 0),
        });
    }

    if backends.is_empty() {
        return Err(ConfigError::new(
            "buckets",
            "no real bucket is configured (an entry without virtual: true)",
        ));
    }
    let known = backends
        .iter()
        .map(|b| b.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    for (path, vb) in &virtuals {
        for (i, backend) in vb.backends.iter().enumerate() {
            let key = format!("{path}.backends[{i}]");
            if !backends.iter().any(|b| b.name == *backend) {
                return Err(ConfigError::new(
                    key,
                    format!("{backend:?} is not a real bucket (known: {known})"),
                ));
            }
            if vb.backends[..i].contains(backend) {
                return Err(ConfigError::new(
                    key,
                    format!("{backend:?} is listed twice"),
                ));
            }
        }
    }
    Ok((backends, virtuals.into_iter().map(|(_, vb)| vb).collect()))
}

fn load_api(
    s: &Section<'_>,
    backends: &[BackendConfig],
    virtual_buckets: &[VirtualBucketConfig],
    warnings: &mut Warnings,
) -> Result<ApiConfig, ConfigError> {
    s.only(&[
        "access_key",
        "secret_key",
        "proxy_mode",
        "auth_required",
        "virtual_host",
        "host",
        "credentials",
        "base_domains",
        "allow_create_bucket",
        "redirect_status",
        "presign_expiry",
        "max_body_size",
        "upload_id_secret",
    ])?;
    let mut credentials = Vec::new();
    // The Go single key pair becomes the first credential, with access to everything. (The Go
    // s3-balance falls back to AWS's documented example keys when they are empty; we do not.)
    match (
        s.string("access_key")?.filter(|k| !k.is_empty()),
        s.string("secret_key")?.filter(|k| !k.is_empty()),
    ) {
        // The owner's key: the admin API too.
        (Some(access_key), Some(secret)) => credentials.push(CredentialConfig {
            access_key,
            secret_key: Secret::new(secret),
            buckets: None,
            read_only: false,
            admin: true,
        }),
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConfigError::new(
                s.key("secret_key"),
                "is required with s3api.access_key",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                s.key("access_key"),
                "is required with s3api.secret_key",
            ))
        }
    }
    for (path, value) in s.list("credentials")? {
        let c = Section::new(&path, Some(value))?;
        c.only(&["access_key", "secret_key", "buckets", "read_only", "admin"])?;
        let access_key = c
            .string("access_key")?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConfigError::new(c.key("access_key"), "is required"))?;
        let secret = c
            .string("secret_key")?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConfigError::new(c.key("secret_key"), "is required"))?;
        if credentials
            .iter()
            .any(|e: &CredentialConfig| e.access_key == access_key)
        {
            return Err(ConfigError::new(
                c.key("access_key"),
                format!("{access_key:?} is configured twice"),
            ));
        }
        let buckets = c.string_list("buckets")?;
        for name in buckets.iter().flatten() {
            if !virtual_buckets.iter().any(|v| v.name == *name) {
                warnings.push(format!(
                    "{}: {name:?} is not a configured virtual bucket",
                    c.key("buckets")
                ));
            }
        }
        credentials.push(CredentialConfig {
            access_key,
            secret_key: Secret::new(secret),
            buckets,
            read_only: c.bool("read_only")?.unwrap_or(false),
            admin: c.bool("admin")?.unwrap_or(false),
        });
    }
    let auth_required = s.bool("auth_required")?.unwrap_or(false);
    if auth_required && credentials.is_empty() {
        return Err(ConfigError::new(
            s.key("auth_required"),
            "is true but no credential is configured (set access_key/secret_key or credentials)",
        ));
    }

    // Legacy `host` (the Go signing host) is one more base domain; ports are not part of it.
    let mut base_domains: Vec<String> = Vec::new();
    let host = s.string("host")?.into_iter();
    for (i, domain) in host
        .chain(s.string_list("base_domains")?.unwrap_or_default())
        .enumerate()
    {
        let d = domain.trim().trim_start_matches('.').to_ascii_lowercase();
        let d = match d.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
            _ => d,
        };
        if d.is_empty() {
            continue;
        }
        if d.contains('/') || d.contains(' ') {
            let key = if s.has("host") && i == 0 {
                s.key("host")
            } else {
                s.key("base_domains")
            };
            return Err(ConfigError::new(
                key,
                format!("{domain:?} is not a host name"),
            ));
        }
        if !base_domains.contains(&d) {
            base_domains.push(d);
        }
    }

    let redirect_status = match s.uint("redirect_status")? {
        None => 307,
        Some(n @ (302 | 307)) => n as u16,
        Some(n) => {
            return Err(ConfigError::new(
                s.key("redirect_status"),
                format!("{n} is not allowed (use 307 or 302)"),
            ))
        }
    };
    let presign_expiry = s
        .duration("presign_expiry")?
        .unwrap_or(Duration::from_secs(15 * 60));
    if presign_expiry.is_zero() || presign_expiry > Duration::from_secs(7 * 24 * 3600) {
        return Err(ConfigError::new(
            s.key("presign_expiry"),
            "must be more than 0 and at most 7 days (168h)",
        ));
    }
    let upload_id_secret = match s.string("upload_id_secret")?.filter(|k| !k.is_empty()) {
        Some(secret) => Secret::new(secret),
        None => derive_upload_id_secret(&credentials, backends),
    };
    Ok(ApiConfig {
        auth_required,
        credentials,
        virtual_host: s.bool("virtual_host")?.unwrap_or(false),
        base_domains,
        allow_create_bucket: s.bool("allow_create_bucket")?.unwrap_or(false),
        redirect_status,
        presign_expiry,
        max_body_bytes: s.size("max_body_size")?,
        upload_id_secret,
    })
}

/// With no `s3api.upload_id_secret`, a stable key derived from secrets the config already holds,
/// so every runtime instance agrees with no extra setting: hex(SHA-256("s3-balance upload-id v1"
/// then, for each credential in config order, "\n" + secret_key)); with no credential, the real
/// buckets' secret_access_keys in config order. Rotating those secrets rotates this key, which
/// invalidates multipart uploads in flight: set `upload_id_secret` to avoid that.
pub fn derive_upload_id_secret(
    credentials: &[CredentialConfig],
    backends: &[BackendConfig],
) -> Secret {
    let mut h = Sha256::new();
    h.update(b"s3-balance upload-id v1");
    let secrets: Vec<&str> = if credentials.is_empty() {
        backends.iter().map(|b| b.secret_key.expose()).collect()
    } else {
        credentials.iter().map(|c| c.secret_key.expose()).collect()
    };
    for secret in secrets {
        h.update(b"\n");
        h.update(secret.as_bytes());
    }
    Secret::new(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_FIXTURE: &str = include_str!("../../config/go-s3-balance.yaml");
    const EXAMPLE_YAML: &str = include_str!("../../config/config.example.yaml");
    const EXAMPLE_TOML: &str = include_str!("../../config/config.example.toml");
    const EXAMPLE_MINIO: &str = include_str!("../../config/minio-local.yaml");

    #[test]
    fn the_local_minio_example_loads_with_its_secret_from_the_environment() {
        let var = |n: &str| (n == "MINIO_SECRET").then(|| "minioadmin".to_owned());
        let (c, warnings) =
            Config::from_text(Some("minio-local.yaml"), EXAMPLE_MINIO, &var).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.backends.len(), 2);
        assert!(c
            .backends
            .iter()
            .all(|b| b.path_style && b.secret_key.expose() == "minioadmin"));
        assert_eq!(c.virtual_buckets[0].name, "files");
        assert!(c.admin.token.is_some() && c.api.credentials[0].admin);
    }

    const GB: u64 = 1 << 30;

    /// A small valid document to which each test adds one mistake.
    fn base(extra_bucket: &str, extra: &str) -> String {
        format!(
            "buckets:\n\
             \x20 - name: a\n    endpoint: http://127.0.0.1:9000\n    access_key_id: k\n    secret_access_key: s\n\
             \x20 - name: b\n    endpoint: http://127.0.0.1:9001\n    access_key_id: k\n    secret_access_key: s\n\
             {extra_bucket}{extra}"
        )
    }

    fn err(text: &str) -> String {
        Config::from_yaml(text)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn go_fixture_loads_with_the_same_meaning() {
        let (c, warnings) = Config::from_yaml(GO_FIXTURE).unwrap();
        assert_eq!(
            c.server,
            ServerConfig {
                host: "127.0.0.1".into(),
                port: 9000,
                shutdown_timeout: Duration::from_secs(30),
                // The Go keys keep their values (as inactivity timeouts, see ServerConfig).
                read_timeout: Duration::from_secs(30),
                write_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(90),
                ..ServerConfig::default()
            }
        );
        assert_eq!(c.backend_client, BackendClientConfig::default());

        let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["aws-archive", "minio-local", "r2-free", "old-backup"]
        );
        let aws = c.backend("aws-archive").unwrap();
        assert_eq!(aws.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(aws.bucket, "aws-archive");
        assert_eq!(aws.region, "eu-west-1");
        assert_eq!(aws.access_key, "AKIAAWSFIXTURE");
        assert_eq!(aws.secret_key.expose(), "aws-fixture-secret");
        assert_eq!(aws.max_size, Some(10 * GB));
        assert_eq!(
            (aws.weight, aws.enabled, aws.path_style, aws.read_only),
            (10, true, false, false)
        );
        assert_eq!(
            (aws.limit_class_a, aws.limit_class_b),
            (Some(1_000_000), Some(10_000_000))
        );
        let minio = c.backend("minio-local").unwrap();
        assert_eq!(minio.endpoint, "http://127.0.0.1:9100");
        assert_eq!(
            (minio.max_size, minio.weight, minio.path_style),
            (Some(500 << 20), 5, true)
        );
        let r2 = c.backend("r2-free").unwrap();
        assert_eq!(
            (r2.max_size, r2.limit_class_a, r2.limit_class_b),
            (None, None, None)
        );
        assert_eq!(r2.region, "auto");
        let old = c.backend("old-backup").unwrap();
        assert!(!old.enabled);
        assert_eq!(old.max_size, Some(GB * 1024 * 3 / 2));

        // Virtual buckets: no pool given, so every real bucket, as the Go balancer does.
        let vnames: Vec<&str> = c.virtual_buckets.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(vnames, ["photos", "documents"]);
        let photos = c.virtual_bucket("photos").unwrap();
        assert!(photos.backends.is_empty());
        assert_eq!(c.pool(photos).len(), 4);
        assert!(!photos.anonymous_read);
        // proxy_mode: false -> reads redirect, writes stay proxied (Go never redirects PUT).
        assert_eq!(
            (photos.reads, photos.writes),
            (DataPathMode::Redirect, DataPathMode::Proxy)
        );
        assert_eq!(
            (c.default_reads, c.default_writes),
            (DataPathMode::Redirect, DataPathMode::Proxy)
        );
        assert!(
            c.virtual_bucket("aws-archive").is_none(),
            "real buckets are not client-visible"
        );

        assert_eq!(
            c.balancer,
            BalancerConfig {
                strategy: Strategy::ConsistentHash,
                health_check_period: Duration::from_secs(45),
                update_stats_period: Duration::from_secs(300),
                retry_attempts: 5,
                retry_delay: Duration::from_millis(500),
                rise: 2,
                fall: 3,
                probe_timeout: Duration::from_secs(5),
                circuit_failures: 3,
                circuit_retry: Duration::from_secs(10),
                retry_buffer: 1024 * 1024,
            }
        );
        assert_eq!(
            c.metrics,
            MetricsConfig {
                enabled: true,
                path: "/prom".into(),
                token: None
            }
        );

        assert!(c.api.auth_required);
        assert!(c.api.virtual_host);
        assert_eq!(c.api.base_domains, ["s3.example.com"]);
        assert_eq!(c.api.credentials.len(), 1);
        let cred = c.credential("GOFIXTUREACCESSKEY").unwrap();
        assert_eq!(cred.secret_key.expose(), "go-fixture-secret-key");
        assert_eq!((cred.buckets.clone(), cred.read_only), (None, false));
        assert_eq!(c.api.redirect_status, 307);
        assert_eq!(
            c.api.upload_id_secret,
            derive_upload_id_secret(&c.api.credentials, &c.backends)
        );
        assert_eq!(
            c.metadata,
            MetadataBackend::Sqlite {
                path: "data/s3-balance.db".into()
            }
        );

        assert!(
            !warnings.iter().any(|w| w.starts_with("database")),
            "the Go database section chooses the store: {warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("timeout")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("key_layout: \"{key}\"")),
            "{warnings:?}"
        );
    }

    #[test]
    fn examples_load_and_yaml_equals_toml() {
        let (yaml, yaml_warnings) = Config::from_yaml(EXAMPLE_YAML).unwrap();
        let (toml, toml_warnings) = Config::from_toml(EXAMPLE_TOML).unwrap();
        assert_eq!(yaml, toml);
        assert_eq!(yaml_warnings, toml_warnings);
        assert!(yaml_warnings.is_empty(), "{yaml_warnings:?}");
        let conditional: Vec<bool> = yaml.backends.iter().map(|b| b.conditional_writes).collect();
        assert_eq!(conditional, [true, false], "set on R2, off by default");
        let none = &|_: &str| None;
        for (name, text) in [
            (Some("c.toml"), EXAMPLE_TOML),
            (Some("c.yml"), EXAMPLE_YAML),
            (Some("config.YAML"), EXAMPLE_YAML),
            // Without a telling name the content decides (KV, DynamoDB, environment).
            (None, EXAMPLE_TOML),
            (None, EXAMPLE_YAML),
            (Some("config.conf"), EXAMPLE_TOML),
            (Some("config"), EXAMPLE_YAML),
        ] {
            assert_eq!(
                Config::from_text(name, text, none).unwrap().0,
                yaml,
                "{name:?}"
            );
        }
        // A name that says TOML is taken at its word: YAML there is a TOML syntax error.
        assert_eq!(
            Config::from_text(Some("c.toml"), EXAMPLE_YAML, none)
                .unwrap_err()
                .key,
            "toml"
        );
        // A document that is neither reports YAML's error (the format of the Go project).
        assert_eq!(
            Config::from_text(None, "buckets: [\n", none)
                .unwrap_err()
                .key,
            "yaml"
        );

        let c = yaml;
        // The example shows the defaults, as it says.
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.backend_client, BackendClientConfig::default());
        assert_eq!(c.backend("r2-main").unwrap().bucket, "my-r2-bucket");
        assert_eq!(c.backend("b2-backup").unwrap().max_size, Some(GB * 1536));
        let photos = c.virtual_bucket("photos").unwrap();
        assert_eq!(photos.backends, ["r2-main", "b2-backup"]);
        assert!(photos.anonymous_read);
        assert_eq!(
            (photos.reads, photos.writes, photos.key_layout),
            (
                DataPathMode::Auto,
                DataPathMode::Proxy,
                KeyLayout::BucketPrefixed
            )
        );
        let docs = c.virtual_bucket("documents").unwrap();
        // data_path wins over proxy_mode.
        assert_eq!(
            (docs.reads, docs.writes),
            (DataPathMode::Proxy, DataPathMode::Proxy)
        );
        assert_eq!(c.api.credentials.len(), 3);
        assert_eq!(photos.cors.len(), 1);
        assert_eq!(photos.cors[0].allowed_methods, ["GET", "PUT", "HEAD"]);
        assert_eq!(photos.cors[0].max_age_seconds, Some(3000));
        let ro = c.credential("AKIAEXAMPLEREADONLY1").unwrap();
        assert_eq!(
            (ro.buckets.clone(), ro.read_only),
            (Some(vec!["photos".to_owned()]), true)
        );
        assert_eq!(c.api.base_domains, ["s3.example.com", "s3.example.org"]);
        assert_eq!(c.api.max_body_bytes, Some(5 * GB));
        assert_eq!(c.api.presign_expiry, Duration::from_secs(900));
        assert_eq!(
            c.api.upload_id_secret.expose(),
            "example-upload-id-secret-change-me"
        );
        assert_eq!(
            c.metrics.token.as_ref().map(|t| t.expose()),
            Some("change-me")
        );
        // Created at run time: the data_path defaults.
        let new = c.bucket_or_default("new-one");
        assert_eq!(
            (new.reads, new.writes, new.key_layout),
            (
                DataPathMode::Proxy,
                DataPathMode::Proxy,
                KeyLayout::BucketPrefixed
            )
        );
    }

    #[test]
    fn strategy_spellings_round_trip() {
        for s in [
            Strategy::RoundRobin,
            Strategy::LeastSpace,
            Strategy::Weighted,
            Strategy::ConsistentHash,
        ] {
            let doc = base("", &format!("balancer:\n  strategy: {}\n", s.as_str()));
            assert_eq!(Config::from_yaml(&doc).unwrap().0.balancer.strategy, s);
        }
    }

    #[test]
    fn defaults_of_a_minimal_document() {
        let (c, warnings) = Config::from_yaml(&base("", "")).unwrap();
        assert_eq!((c.server.host.as_str(), c.server.port), ("0.0.0.0", 8080));
        assert_eq!(c.balancer.strategy, Strategy::LeastSpace);
        assert_eq!(
            (c.balancer.rise, c.balancer.fall, c.balancer.retry_attempts),
            (2, 3, 3)
        );
        assert_eq!(c.balancer.health_check_period, Duration::from_secs(30));
        assert_eq!(
            (c.default_reads, c.default_writes),
            (DataPathMode::Proxy, DataPathMode::Proxy)
        );
        assert_eq!(c.default_key_layout, KeyLayout::BucketPrefixed);
        let a = c.backend("a").unwrap();
        assert_eq!(
            (a.weight, a.enabled, a.max_size, a.region.as_str()),
            (1, true, None, "us-east-1")
        );
        assert!(!c.api.auth_required && c.api.credentials.is_empty());
        assert_eq!(c.api.redirect_status, 307);
        assert!(!c.metrics.enabled);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("auth_required is false")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("no virtual bucket")),
            "{warnings:?}"
        );
        // proxy_mode: true -> everything proxied.
        let (c, _) = Config::from_yaml(&base("", "s3api:\n  proxy_mode: true\n")).unwrap();
        assert_eq!(
            (c.default_reads, c.default_writes),
            (DataPathMode::Proxy, DataPathMode::Proxy)
        );
    }

    #[test]
    fn metadata_choices() {
        let load = |m: &str| Config::from_yaml(&base("", m)).map(|(c, _)| c.metadata);
        assert_eq!(
            load("metadata:\n  type: memory\n").unwrap(),
            MetadataBackend::Memory
        );
        assert_eq!(
            load("metadata:\n  type: dynamodb\n  table: idx\n").unwrap(),
            MetadataBackend::DynamoDb {
                table: "idx".into()
            }
        );
        assert_eq!(
            load("metadata:\n  path: /var/lib/x.db\n").unwrap(),
            MetadataBackend::Sqlite {
                path: "/var/lib/x.db".into()
            }
        );
        assert!(load("metadata:\n  type: redis\n")
            .unwrap_err()
            .to_string()
            .contains("metadata.type: \"redis\""));
    }

    #[test]
    fn validation_errors_name_the_key_and_the_problem() {
        let vb = "  - name: v\n    virtual: true\n";
        let cases: Vec<(String, &str)> = vec![
            (
                base("  - name: c\n    endpoint: http://x\n    access_key_id: k\n    secret_access_key: s\n    max_size: 12XB\n", ""),
                "config: buckets[2].max_size: \"12XB\" is not a size (use B, KB, MB, GB or TB)",
            ),
            (
                base("  - name: a\n    endpoint: http://x\n    access_key_id: k\n    secret_access_key: s\n", ""),
                "config: buckets[2].name: \"a\" is already used by buckets[0]",
            ),
            (
                base("  - name: v\n    virtual: true\n    backends: [a, nope]\n", ""),
                "config: buckets[2].backends[1]: \"nope\" is not a real bucket (known: a, b)",
            ),
            (
                base("  - name: v\n    virtual: true\n    backends: [a, a]\n", ""),
                "config: buckets[2].backends[1]: \"a\" is listed twice",
            ),
            (
                base("  - name: v\n    virtual: true\n    cors:\n      - allowed_origins: [\"*\"]\n        allowed_methods: [PATCH]\n", ""),
                "config: buckets[2].cors[0]: Found unsupported HTTP method in CORS config. Unsupported method is PATCH",
            ),
            (
                base("  - name: v\n    virtual: true\n    cors:\n      - allowed_methods: [GET]\n        origins: [\"*\"]\n", ""),
                "config: buckets[2].cors[0].origins: unknown key",
            ),
            (
                "buckets:\n  - name: a\n    endpoint: http://x\n    access_key_id: k\n    secret_access_key: s\n    weight: 0\n\
                 balancer:\n  strategy: weighted\n"
                    .to_owned(),
                "config: balancer.strategy: \"weighted\" needs at least one enabled backend with weight > 0 (all have weight 0)",
            ),
            (
                format!("buckets:\n{vb}"),
                "config: buckets: no real bucket is configured (an entry without virtual: true)",
            ),
            ("server:\n  port: 8080\n".to_owned(), "config: buckets: no real bucket is configured (an entry without virtual: true)"),
            (base("", "server:\n  port: 0\n"), "config: server.port: 0 is not a port (use 1 to 65535)"),
            (base("", "server:\n  port: 70000\n"), "config: server.port: 70000 is not a port (use 1 to 65535)"),
            (base("", "s3api:\n  redirect_status: 301\n"), "config: s3api.redirect_status: 301 is not allowed (use 307 or 302)"),
            (
                base("", "balancer:\n  strategy: least_space\n"),
                "config: balancer.strategy: \"least_space\" is not a strategy (use round-robin, least-space, weighted or consistent-hash)",
            ),
            (
                base("", "balancr:\n  strategy: weighted\n"),
                "config: balancr: unknown key (known here: server, backend_client, database, buckets, balancer, metrics, s3api, data_path, metadata, admin)",
            ),
            (base("", "balancer:\n  stratgy: weighted\n"), "config: balancer.stratgy: unknown key"),
            (base("  - name: c\n    endpont: http://x\n", ""), "config: buckets[2].endpont: unknown key"),
            (base("", "balancer:\n  retry_delay: 5\n"), "config: balancer.retry_delay: 5 has no unit"),
            (base("", "balancer:\n  retry_delay: 5 parsecs\n"), "config: balancer.retry_delay: \"5 parsecs\" is not a duration"),
            (base("", "balancer:\n  fall: 0\n"), "config: balancer.fall: 0 is out of range (use 1 to 1000)"),
            (base("", "s3api:\n  auth_required: true\n"), "config: s3api.auth_required: is true but no credential is configured"),
            (base("", "s3api:\n  access_key: x\n"), "config: s3api.secret_key: is required with s3api.access_key"),
            (
                base("", "s3api:\n  access_key: x\n  secret_key: y\n  credentials:\n    - access_key: x\n      secret_key: z\n"),
                "config: s3api.credentials[0].access_key: \"x\" is configured twice",
            ),
            (base("", "s3api:\n  presign_expiry: 200h\n"), "config: s3api.presign_expiry: must be more than 0 and at most 7 days"),
            (base("", "server:\n  port: eighty\n"), "config: server.port: expected a whole number >= 0, found \"eighty\""),
            (base("  - name: c\n    endpoint: http://x\n", ""), "config: buckets[2].access_key_id: is required for a real bucket"),
            (base("  - name: c\n    endpoint: ftp://x\n    access_key_id: k\n    secret_access_key: s\n", ""), "config: buckets[2].endpoint: \"ftp://x\" must start with http:// or https://"),
            (base("  - endpoint: http://x\n", ""), "config: buckets[2].name: is required"),
            (base("", "data_path:\n  reads: teleport\n"), "config: data_path.reads: \"teleport\" is not a mode (use proxy, redirect or auto)"),
            (base("  - name: v\n    virtual: true\n    key_layout: \"{key}/{bucket}\"\n", ""), "config: buckets[2].key_layout: \"{key}/{bucket}\" is not a key layout"),
            (base("", "metrics:\n  path: metrics\n"), "config: metrics.path: \"metrics\" must start with /"),
            (base("", "admin:\n  prefix: admin\n"), "config: admin.prefix: \"admin\" must start with / and not end with / (e.g. \"/_admin\")"),
            (base("", "admin:\n  prefix: /x/\n"), "config: admin.prefix: \"/x/\" must start with / and not end with / (e.g. \"/_admin\")"),
            (base("", "admin:\n  user: root\n"), "config: admin.user: unknown key (known here: enabled, prefix, token)"),
            ("buckets: 3\n".to_owned(), "config: buckets: expected a list, found 3"),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(
                got.starts_with(want),
                "\n got: {got}\nwant: {want}\nfor:\n{text}"
            );
        }
    }

    #[test]
    fn connection_and_backend_timeouts_load_with_go_defaults_for_zero() {
        let (c, _) = Config::from_yaml(&base(
            "",
            "server:\n  read_header_timeout: 2s\n  read_timeout: 0s\n  write_timeout: 5s\n  \
             idle_timeout: 1m\n  max_connections: 64\n\
             backend_client:\n  connect_timeout: 1s\n  first_byte_timeout: 2500ms\n  stall_timeout: 3s\n",
        ))
        .unwrap();
        let d = ServerConfig::default();
        assert_eq!(
            (
                c.server.read_header_timeout,
                c.server.read_timeout,
                c.server.write_timeout,
                c.server.idle_timeout,
                c.server.max_connections
            ),
            (
                Duration::from_secs(2),
                d.read_timeout,
                Duration::from_secs(5),
                Duration::from_secs(60),
                64
            )
        );
        assert_eq!(
            c.backend_client,
            BackendClientConfig {
                connect_timeout: Duration::from_secs(1),
                first_byte_timeout: Duration::from_millis(2500),
                stall_timeout: Duration::from_secs(3),
            }
        );
        let (c, _) = Config::from_yaml(&base("", "")).unwrap();
        assert_eq!(
            (c.server.clone(), c.backend_client.clone()),
            (d, BackendClientConfig::default())
        );
        assert!(err(&base("", "backend_client:\n  stall: 3s\n")).contains("backend_client.stall"));
        assert!(err(&base("", "server:\n  idle_timeout: 30\n")).contains("server.idle_timeout"));
        assert!(
            err(&base("", "server:\n  max_connections: -1\n")).contains("server.max_connections")
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(Config::from_yaml("buckets: [\n").unwrap_err().key == "yaml");
        assert!(Config::from_toml("[buckets\n").unwrap_err().key == "toml");
    }

    #[test]
    fn known_go_keys_are_ignored_with_a_warning() {
        let (_, warnings) =
            Config::from_yaml(&base("", "metrics:\n  enabled: true\n  port: 9090\n")).unwrap();
        assert!(
            warnings
                .contains(&"metrics.port: ignored; metrics are served on the main port".to_owned()),
            "{warnings:?}"
        );
    }

    #[test]
    fn sql_metadata_from_our_section_or_the_go_database_section() {
        let load = |extra: &str| Config::from_yaml(&base("", extra));
        let sql = |kind, url: &str, max_connections, max_lifetime_secs| {
            MetadataBackend::Sql(SqlDatabase {
                kind,
                url: Secret::new(url),
                max_connections,
                max_lifetime_secs,
            })
        };
        let (c, warnings) = load(
            "metadata:\n  type: postgres\n  url: postgres://u:p@db/idx\n  max_connections: 8\n",
        )
        .unwrap();
        assert_eq!(
            c.metadata,
            sql(SqlKind::Postgres, "postgres://u:p@db/idx", Some(8), None)
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.starts_with("metadata") || w.starts_with("database")),
            "{warnings:?}"
        );
        let (c, _) = load("metadata:\n  type: mariadb\n  url: mysql://u:p@db/idx\n").unwrap();
        assert_eq!(
            c.metadata,
            sql(SqlKind::MySql, "mysql://u:p@db/idx", None, None)
        );
        assert!(load("metadata:\n  type: mysql\n")
            .unwrap_err()
            .to_string()
            .contains("metadata.url: required"));
        assert!(
            load("metadata:\n  type: mysql\n  url: x\n  max_connections: 0\n")
                .unwrap_err()
                .to_string()
                .contains("metadata.max_connections")
        );

        // The Go section, its DSN kept as written for the store to read.
        let go = "database:\n  type: postgresql\n  dsn: \"host=db user=u password=p dbname=idx port=5432 sslmode=disable\"\n  max_open_conns: 25\n  max_idle_conns: 5\n  conn_max_lifetime: 300\n  log_level: warn\n  auto_migrate: true\n";
        let (c, warnings) = load(go).unwrap();
        assert_eq!(
            c.metadata,
            sql(
                SqlKind::Postgres,
                "host=db user=u password=p dbname=idx port=5432 sslmode=disable",
                Some(25),
                Some(300)
            )
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.starts_with("metadata") || w.starts_with("database")),
            "{warnings:?}"
        );
        let (c, warnings) = load(
            "database:\n  type: mysql\n  dsn: \"u:p@tcp(db:3306)/idx?charset=utf8mb4\"\n  max_open_conns: 0\n  auto_migrate: false\n",
        )
        .unwrap();
        assert_eq!(
            c.metadata,
            sql(
                SqlKind::MySql,
                "u:p@tcp(db:3306)/idx?charset=utf8mb4",
                None,
                None
            )
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("database.auto_migrate: ignored")),
            "{warnings:?}"
        );
        let (c, _) = load("database:\n  type: sqlite\n  dsn: /var/lib/go.db\n").unwrap();
        assert_eq!(
            c.metadata,
            MetadataBackend::Sqlite {
                path: "/var/lib/go.db".into()
            }
        );
        assert!(load("database:\n  type: mysql\n")
            .unwrap_err()
            .to_string()
            .contains("database.dsn: required"));
        assert!(load("database:\n  type: oracle\n  dsn: x\n")
            .unwrap_err()
            .to_string()
            .contains("database.type"));

        // Both: ours wins, and says so.
        let (c, warnings) =
            load("database:\n  type: mysql\n  dsn: x\nmetadata:\n  type: memory\n").unwrap();
        assert_eq!(c.metadata, MetadataBackend::Memory);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("database: ignored; `metadata` chooses")),
            "{warnings:?}"
        );
        // The URL is a secret: Debug does not print the password.
        assert!(!format!("{c:?}").contains("password=p"));
        let (c, _) = load(go).unwrap();
        assert!(!format!("{c:?}").contains("password=p"));
    }

    #[test]
    fn disabled_virtual_buckets_do_not_exist_as_in_go() {
        let (c, warnings) = Config::from_yaml(&base(
            "  - name: v\n    virtual: true\n    enabled: false\n",
            "",
        ))
        .unwrap();
        assert!(c.virtual_bucket("v").is_none());
        assert!(warnings.iter().any(|w| w.contains("\"v\" is disabled")));
    }

    #[test]
    fn host_and_base_domains_are_normalized() {
        let (c, _) = Config::from_yaml(&base("", "s3api:\n  host: S3.Example.COM:8080\n  base_domains: [.cdn.example.net, s3.example.com]\n")).unwrap();
        assert_eq!(c.api.base_domains, ["s3.example.com", "cdn.example.net"]);
    }

    #[test]
    fn upload_id_secret_is_derived_stably_from_credential_secrets() {
        let doc = |secret: &str| {
            base(
                "",
                &format!("s3api:\n  access_key: AK\n  secret_key: {secret}\n"),
            )
        };
        let one = Config::from_yaml(&doc("s1"))
            .unwrap()
            .0
            .api
            .upload_id_secret;
        assert_eq!(
            one,
            Config::from_yaml(&doc("s1"))
                .unwrap()
                .0
                .api
                .upload_id_secret
        );
        assert_ne!(
            one,
            Config::from_yaml(&doc("s2"))
                .unwrap()
                .0
                .api
                .upload_id_secret
        );
        // hex(SHA-256("s3-balance upload-id v1\ns1")), as documented.
        let want = hex::encode(Sha256::digest(b"s3-balance upload-id v1\ns1"));
        assert_eq!(one.expose(), want);
        // Not a secret that can be guessed from the access key.
        assert_ne!(
            one.expose(),
            hex::encode(Sha256::digest(b"s3-balance upload-id v1"))
        );
    }

    #[test]
    fn parse_size_table() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("100", 100),
            ("100B", 100),
            ("100 b", 100),
            ("1KB", 1024),
            ("1kb", 1024),
            ("1K", 1024),
            ("10GB", 10 << 30),
            ("10 GB", 10 << 30),
            ("5MB", 5 << 20),
            ("500mb", 500 << 20),
            ("1.5GB", 3 << 29),
            ("0.5KB", 512),
            (".5KB", 512),
            ("2TB", 2 << 40),
            ("2tb", 2 << 40),
            ("1GiB", 1 << 30),
            ("  7 MB ", 7 << 20),
            ("16777215TB", 16_777_215u64 << 40),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        for bad in [
            "", "GB", "12XB", "-5GB", "1.2.3GB", "ten GB", "5 G B", "1e3",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(format!("{bad:?} is not a size (use B, KB, MB, GB or TB)")),
                "{bad}"
            );
        }
        assert_eq!(
            parse_size("16777216TB"),
            Err("\"16777216TB\" is too large".to_owned())
        );
    }

    #[test]
    fn parse_duration_table() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("250us", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
        for bad in ["", "30", "5 m", "1d", "s", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn env_expansion() {
        let env = |name: &str| match name {
            "R2_SECRET" => Some("sec/ret+1".to_owned()),
            "PORT" => Some("9000".to_owned()),
            _ => None,
        };
        assert_eq!(
            expand_env(
                "a: ${R2_SECRET}\nport: ${PORT}\nx: pre-${PORT}-post\n",
                &env
            )
            .unwrap(),
            "a: sec/ret+1\nport: 9000\nx: pre-9000-post\n"
        );
        // Escape, lone dollars, comments untouched.
        assert_eq!(
            expand_env("a: $${X} $5 $\n", &env).unwrap(),
            "a: ${X} $5 $\n"
        );
        assert_eq!(
            expand_env("a: 1 # see ${MISSING}\n# ${ALSO}\n", &env).unwrap(),
            "a: 1 # see ${MISSING}\n# ${ALSO}\n"
        );
        assert_eq!(
            expand_env("a: \"x # ${PORT}\"\n", &env).unwrap(),
            "a: \"x # 9000\"\n"
        );
        let e = expand_env("a: 1\nb: ${MISSING_ONE}\n", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: line 2: environment variable MISSING_ONE is not set"
        );
        assert!(expand_env("a: ${OPEN\n", &env)
            .unwrap_err()
            .problem
            .contains("not closed"));
        assert!(expand_env("a: ${1BAD}\n", &env)
            .unwrap_err()
            .problem
            .contains("not an environment variable name"));

        // End to end: a secret from the environment reaches the backend config.
        let text = base("", "").replace(
            "secret_access_key: s\n  - name: b",
            "secret_access_key: ${R2_SECRET}\n  - name: b",
        );
        let (c, _) = Config::from_yaml(&expand_env(&text, &env).unwrap()).unwrap();
        assert_eq!(c.backend("a").unwrap().secret_key.expose(), "sec/ret+1");
    }

    #[test]
    fn secrets_are_not_printed() {
        let (c, _) = Config::from_yaml(GO_FIXTURE).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("go-fixture-secret-key"));
        assert!(!debug.contains("aws-fixture-secret"));
    }
}
