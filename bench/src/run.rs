//! The benchmark run: processes, measurements in interleaved rounds, the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::client::{run_load, Driver, Payload, RunStats};

#[derive(clap::Args)]
pub struct Options {
    /// The `s3-balance` binary.
    #[arg(long)]
    server: PathBuf,
    /// Short CI smoke mode: fewer rounds, shorter runs, smaller index sizes.
    #[arg(long)]
    quick: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-results/latest.json")]
    out: PathBuf,
    /// Criterion's output folder (`$CARGO_TARGET_DIR/criterion`), read for the decision path.
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Files holding the output of `scripts/worker-size` and `scripts/lambda-size`.
    #[arg(long)]
    edge: Vec<PathBuf>,
    /// Scratch folder (configs, SQLite files, logs).
    #[arg(long, default_value = "bench-results/work")]
    work: PathBuf,
    /// Only these sections (large, small, redirect, memory, scale, stores); all when empty.
    #[arg(long)]
    only: Vec<String>,
    /// Never pin processes to cores. By default, on a machine with 8 or more cores, the
    /// backend, the proxy under test and the load driver run on separate cores (`taskset`).
    #[arg(long)]
    no_pin: bool,
    /// The cores chosen at start (see [`Pinning`]).
    #[arg(skip)]
    pin: Option<Pinning>,
}

/// Which cores each process may run on, when the machine has enough to keep the backend,
/// the proxy (gateway or nginx) and the load driver apart. `taskset -c` runs a child on its
/// cores (it execs the program, so the PID is the program's); the driver pins itself.
#[derive(Clone, Debug)]
pub struct Pinning {
    backend: Vec<usize>,
    proxy: Vec<usize>,
    client: Vec<usize>,
}

/// Cores this process may use, from `Cpus_allowed_list` ("0-3,8-11").
fn allowed_cores() -> Vec<usize> {
    let list = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_default();
    parse_core_list(&list)
}

/// `"0-3,8-11"` -> 0, 1, 2, 3, 8, 9, 10, 11; empty when unreadable.
fn parse_core_list(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|n| n.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cores.push(a),
            (Some(Ok(a)), Some(Ok(b))) => cores.extend(a..=b),
            _ => return Vec::new(),
        }
    }
    cores
}

fn core_list(cores: &[usize]) -> String {
    cores
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Pinning {
    /// With 8 or more cores: 2 for the (single-threaded) driver, the rest halved between the
    /// backend and the proxy. `None` (everything unpinned, sharing every core) below that,
    /// with `--no-pin`, or without `taskset`.
    fn choose(no_pin: bool) -> Option<Pinning> {
        let cores = allowed_cores();
        if no_pin || cores.len() < 8 {
            return None;
        }
        if !Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("taskset not found: processes stay unpinned");
            return None;
        }
        Some(Self::split(&cores))
    }

    /// 2 cores for the driver (the last), the rest halved: backend first, then the proxy
    /// (which gets the odd one).
    fn split(cores: &[usize]) -> Pinning {
        let (rest, client) = cores.split_at(cores.len().saturating_sub(2));
        let (backend, proxy) = rest.split_at(rest.len() / 2);
        Pinning {
            backend: backend.to_vec(),
            proxy: proxy.to_vec(),
            client: client.to_vec(),
        }
    }

    /// Pins this process (every thread) to the driver's cores.
    fn pin_self(&self) -> bool {
        Command::new("taskset")
            .args(["-a", "-p", "-c", &core_list(&self.client)])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// `program` as a command, run on `cores` when given.
fn pinned_command(program: impl AsRef<std::ffi::OsStr>, cores: Option<&[usize]>) -> Command {
    match cores {
        Some(cores) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core_list(cores)).arg(program);
            c
        }
        None => Command::new(program),
    }
}

const MIB: usize = 1 << 20;
const GATEWAY_AK: &str = "AKIABENCHGATEWAY0001";
const GATEWAY_SK: &str = "bench-gateway-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process, ended by its PID when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    /// SIGTERM first, SIGKILL after 3 s: a SIGKILLed nginx master leaves its workers running
    /// (and holding the port); on SIGTERM it stops them, and the gateway drains.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let asked = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(3);
        while asked && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} (pid {pid}) did not stop on SIGTERM: killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `pid` and its direct children (nginx workers), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    fn ticks(stat: &str) -> Option<(u64, u32)> {
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // Fields after the name: state(3) ppid(4) ... utime(14) stime(15), 1-based overall.
        Some((
            f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
            f[1].parse().ok()?,
        ))
    }
    if pid == 0 {
        return 0.0;
    }
    let mut total = 0;
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        total += ticks(&s).map_or(0, |t| t.0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if n == pid {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{n}/stat")) {
                if let Some((t, ppid)) = ticks(&s) {
                    if ppid == pid {
                        total += t;
                    }
                }
            }
        }
    }
    // USER_HZ is 100 on Linux.
    total as f64 / 100.0
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

async fn wait_ready(driver: &Driver, url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(o) = driver.send(Method::GET, url, &Payload::None).await {
            if o.status < 500 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not come up at {url}");
}

struct Gateway {
    proc: Proc,
    base: String,
}

/// Config of a gateway in front of `backends` real buckets on the bench backend.
fn gateway_config(
    port: u16,
    db: &Path,
    backend_port: u16,
    backends: &[String],
    virtuals: &str,
) -> String {
    let mut s = format!(
        "server:\n  host: 127.0.0.1\n  port: {port}\n  shutdown_timeout: 1s\n\
         metadata:\n  type: sqlite\n  path: \"{}\"\n\
         balancer:\n  strategy: round-robin\n  health_check_period: 30s\n\
         metrics:\n  enabled: false\n\
         data_path:\n  reads: proxy\n  writes: proxy\n\
         s3api:\n  access_key: {GATEWAY_AK}\n  secret_key: {GATEWAY_SK}\n  auth_required: false\n  virtual_host: false\n\
         buckets:\n",
        db.display()
    );
    for b in backends {
        s.push_str(&format!(
            "  - name: {b}\n    endpoint: http://127.0.0.1:{backend_port}\n    region: us-east-1\n    \
             access_key_id: bench\n    secret_access_key: bench-secret\n    path_style: true\n    \
             conditional_writes: true\n"
        ));
    }
    s.push_str(virtuals);
    s
}

async fn start_gateway(opts: &Options, name: &str, config: String, driver: &Driver) -> Gateway {
    let path = opts.work.join(format!("{name}.yaml"));
    std::fs::write(&path, config).expect("write config");
    let port = {
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("port: ")
                    .map(|p| p.parse::<u16>().unwrap())
            })
            .unwrap()
    };
    let log = std::fs::File::create(opts.work.join(format!("{name}.log"))).expect("log file");
    let child = pinned_command(&opts.server, opts.pin.as_ref().map(|p| &p.proxy[..]))
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start s3-balance");
    let proc = Proc {
        name: name.to_owned(),
        child,
    };
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(driver, &format!("{base}/health"), "s3-balance").await;
    Gateway { proc, base }
}

fn start_nginx(opts: &Options, backend_port: u16) -> (Proc, String) {
    let port = free_port();
    let dir = std::fs::canonicalize(&opts.work).unwrap().join("nginx");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf = format!(
        "worker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/logs/access.log;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
             location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header Host 127.0.0.1:{backend_port};\n\
               proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n",
        d = dir.display(),
        // `auto` counts the machine's cores, not the ones it is pinned to.
        workers = opts
            .pin
            .as_ref()
            .map_or("auto".to_owned(), |p| p.proxy.len().to_string()),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = pinned_command("nginx", opts.pin.as_ref().map(|p| &p.proxy[..]))
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx (apt-get install nginx-light)");
    (
        Proc {
            name: "nginx".into(),
            child,
        },
        format!("http://127.0.0.1:{port}"),
    )
}

/// The floor ([`crate::bare_proxy`]), on the proxy's cores.
fn start_bare_proxy(opts: &Options, backend_port: u16) -> (Proc, String) {
    let port = free_port();
    let child = pinned_command(
        std::env::current_exe().unwrap(),
        opts.pin.as_ref().map(|p| &p.proxy[..]),
    )
    .args(["bare-proxy", "--port", &port.to_string(), "--backend"])
    .arg(format!("http://127.0.0.1:{backend_port}"))
    .stdin(Stdio::null())
    .spawn()
    .expect("start bare proxy");
    (
        Proc {
            name: "bare proxy".into(),
            child,
        },
        format!("http://127.0.0.1:{port}"),
    )
}

/// One measurement: load stats plus CPU seconds per operation of the processes watched.
#[derive(Debug, Clone, Default)]
struct Sample {
    stats: RunStats,
    /// CPU ms per operation of the proxy (gateway or nginx); 0 for direct.
    proxy_cpu_ms: f64,
    backend_cpu_ms: f64,
}

#[allow(clippy::too_many_arguments)] // one call shape for every row; a struct would only rename them
async fn measure(
    driver: &Driver,
    proxy_pid: Option<u32>,
    backend_pid: u32,
    concurrency: usize,
    max_ops: u64,
    max_time: Duration,
    expect: u16,
    make: impl Fn(u64) -> (Method, String, Payload) + Send + Sync + 'static,
) -> Sample {
    let p0 = proxy_pid.map(cpu_seconds).unwrap_or(0.0);
    let b0 = cpu_seconds(backend_pid);
    let stats = run_load(driver, concurrency, max_ops, max_time, expect, make).await;
    let p1 = proxy_pid.map(cpu_seconds).unwrap_or(0.0);
    let b1 = cpu_seconds(backend_pid);
    let ops = stats.ops.max(1) as f64;
    if stats.errors > 0 {
        eprintln!("  ({} errors)", stats.errors);
    }
    Sample {
        proxy_cpu_ms: (p1 - p0) * 1000.0 / ops,
        backend_cpu_ms: (b1 - b0) * 1000.0 / ops,
        stats,
    }
}

/// Medians over rounds of each metric of a row.
#[derive(Debug, Clone, Default)]
struct Row {
    samples: Vec<Sample>,
}

impl Row {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(f).collect();
        median(&mut v)
    }
    fn mbps(&self) -> f64 {
        self.med(|s| s.stats.mb_per_s())
    }
    fn ops(&self) -> f64 {
        self.med(|s| s.stats.ops_per_s())
    }
    fn p50(&self) -> f64 {
        self.med(|s| s.stats.p50_us)
    }
    fn p99(&self) -> f64 {
        self.med(|s| s.stats.p99_us)
    }
    fn cpu(&self) -> f64 {
        self.med(|s| s.proxy_cpu_ms)
    }
    fn backend_cpu(&self) -> f64 {
        self.med(|s| s.backend_cpu_ms)
    }
    fn json(&self) -> Value {
        json!({
            "rounds": self.samples.len(),
            "mb_per_s": self.mbps(),
            "ops_per_s": self.ops(),
            "p50_us": self.p50(),
            "p99_us": self.p99(),
            "proxy_cpu_ms_per_op": self.cpu(),
            "backend_cpu_ms_per_op": self.backend_cpu(),
            "ops_total": self.samples.iter().map(|s| s.stats.ops).sum::<u64>(),
            "errors": self.samples.iter().map(|s| s.stats.errors).sum::<u64>(),
        })
    }
}

struct Goal {
    what: String,
    value: String,
    met: Option<bool>,
}

fn goal(goals: &mut Vec<Goal>, what: &str, value: String, met: Option<bool>) {
    goals.push(Goal {
        what: what.to_owned(),
        value,
        met,
    });
}

fn wants(opts: &Options, section: &str) -> bool {
    opts.only.is_empty() || opts.only.iter().any(|s| s == section)
}

pub async fn run(mut opts: Options) -> i32 {
    std::fs::create_dir_all(&opts.work).expect("work dir");
    opts.pin = Pinning::choose(opts.no_pin);
    if let Some(pin) = &opts.pin {
        if !pin.pin_self() {
            eprintln!("taskset could not pin the driver: processes stay unpinned");
            opts.pin = None;
        }
    }
    let cores = allowed_cores().len();
    let placement = match &opts.pin {
        Some(p) => format!(
            "{cores} cores; pinned apart: backend on {}, proxy (gateway or nginx) on {}, load driver on {}",
            core_list(&p.backend),
            core_list(&p.proxy),
            core_list(&p.client)
        ),
        None => format!(
            "{cores} cores; unpinned: backend, proxy and load driver share them{}",
            if opts.no_pin { " (--no-pin)" } else { " (pinning needs >= 8)" }
        ),
    };
    eprintln!("{placement}");
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir).expect("out dir");
    }
    let quick = opts.quick;
    let rounds = if quick { 3 } else { 5 };
    let mut report = BTreeMap::<String, Value>::new();
    let mut goals = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let driver = Driver::new(None);
    let signed = Driver::new(Some((GATEWAY_AK.into(), GATEWAY_SK.into())));

    // The backend, its own process so that its CPU is counted apart.
    let backend_port = free_port();
    let backend = Proc {
        name: "backend".into(),
        child: pinned_command(
            std::env::current_exe().unwrap(),
            opts.pin.as_ref().map(|p| &p.backend[..]),
        )
        .args(["backend", "--port", &backend_port.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("start backend"),
    };
    let bpid = backend.pid();
    let direct = format!("http://127.0.0.1:{backend_port}");
    wait_ready(
        &driver,
        &format!("{direct}/b0?list-type=2&max-keys=1"),
        "backend",
    )
    .await;

    let db = opts.work.join("main.db");
    let _ = std::fs::remove_file(&db);
    let gw_port = free_port();
    let virtuals = "  - name: bench\n    virtual: true\n    backends: [b0]\n\
                    \x20 - name: bench-redirect\n    virtual: true\n    backends: [b0]\n    reads: redirect\n";
    let gw = start_gateway(
        &opts,
        "gateway",
        gateway_config(gw_port, &db, backend_port, &["b0".into()], virtuals),
        &driver,
    )
    .await;
    let gpid = gw.proc.pid();
    let (nginx, nginx_base) = start_nginx(&opts, backend_port);
    let npid = nginx.pid();
    wait_ready(
        &driver,
        &format!("{nginx_base}/b0?list-type=2&max-keys=1"),
        "nginx",
    )
    .await;

    let (bare, bare_base) = start_bare_proxy(&opts, backend_port);
    let bare_pid = bare.pid();
    wait_ready(
        &driver,
        &format!("{bare_base}/b0?list-type=2&max-keys=1"),
        "bare proxy",
    )
    .await;

    // Paths: (label, base URL of bucket `bench`'s objects, CPU pid of the proxy). `bare` is
    // the floor (small objects only): the gateway's HTTP stack doing nothing else.
    let paths: Vec<(&str, String, Option<u32>)> = vec![
        ("direct", format!("{direct}/b0/bench"), None),
        ("proxy", format!("{}/bench", gw.base), Some(gpid)),
        ("nginx", format!("{nginx_base}/b0/bench"), Some(npid)),
        ("bare", format!("{bare_base}/b0/bench"), Some(bare_pid)),
    ];

    let large = Bytes::from(vec![0x5au8; 64 * MIB]);
    let small = Bytes::from(vec![0x5au8; 4096]);
    // Objects read by every path, written through the gateway so that it has them indexed.
    for (key, body) in [
        ("large", &large),
        ("small", &small),
        ("zero", &Bytes::new()),
    ] {
        let o = driver
            .send(
                Method::PUT,
                &format!("{}/bench/{key}", gw.base),
                &Payload::Bytes(body.clone()),
            )
            .await
            .expect("seed PUT");
        assert_eq!(o.status, 200, "seed PUT of {key}");
    }
    let o = driver
        .send(
            Method::PUT,
            &format!("{}/bench-redirect/zero", gw.base),
            &Payload::None,
        )
        .await
        .expect("seed PUT");
    assert_eq!(o.status, 200);
    // Warm-up: connections to every hop.
    for (_, base, _) in &paths {
        let url = format!("{base}/small");
        run_load(
            &driver,
            16,
            2000,
            Duration::from_millis(300),
            200,
            move |_| (Method::GET, url.clone(), Payload::None),
        )
        .await;
    }

    // ---- 1 and 2: large and small objects, interleaved rounds.
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let small_time = Duration::from_millis(if quick { 400 } else { 1500 });
    let large_n = if quick { 3 } else { 8 };
    let do_large = wants(&opts, "large");
    let do_small = wants(&opts, "small");
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (label, base, pid) in &paths {
            if do_large && *label != "bare" {
                for (op, method) in [("GET", Method::GET), ("PUT", Method::PUT)] {
                    let url = if op == "GET" {
                        format!("{base}/large")
                    } else {
                        format!("{base}/large-put-{label}")
                    };
                    let payload = if op == "GET" {
                        Payload::None
                    } else {
                        Payload::Bytes(large.clone())
                    };
                    let s = measure(
                        &driver,
                        *pid,
                        bpid,
                        1,
                        large_n,
                        Duration::from_secs(20),
                        200,
                        move |_| (method.clone(), url.clone(), payload.clone()),
                    )
                    .await;
                    rows.entry(format!("large {op} {label}"))
                        .or_default()
                        .samples
                        .push(s);
                }
            }
            if do_small {
                for c in [1usize, 16] {
                    for (op, method) in [("GET", Method::GET), ("PUT", Method::PUT)] {
                        let base = base.clone();
                        let small = small.clone();
                        let label2 = *label;
                        let s =
                            measure(&driver, *pid, bpid, c, 200_000, small_time, 200, move |i| {
                                if op == "GET" {
                                    (Method::GET, format!("{base}/small"), Payload::None)
                                } else {
                                    (
                                        method.clone(),
                                        format!("{base}/small-put-{label2}-{}", i % 64),
                                        Payload::Bytes(small.clone()),
                                    )
                                }
                            })
                            .await;
                        rows.entry(format!("small {op} c={c} {label}"))
                            .or_default()
                            .samples
                            .push(s);
                    }
                }
            }
        }
        // Signed requests through the gateway (header SigV4 verified on every request).
        if do_small {
            let url = format!("{}/bench/small", gw.base);
            let s = measure(
                &signed,
                Some(gpid),
                bpid,
                16,
                200_000,
                small_time,
                200,
                move |_| (Method::GET, url.clone(), Payload::None),
            )
            .await;
            rows.entry("small GET c=16 proxy-signed".into())
                .or_default()
                .samples
                .push(s);
        }
        if do_large {
            let url = format!("{}/bench/large", gw.base);
            let s = measure(
                &signed,
                Some(gpid),
                bpid,
                1,
                large_n,
                Duration::from_secs(20),
                200,
                move |_| (Method::GET, url.clone(), Payload::None),
            )
            .await;
            rows.entry("large GET proxy-signed".into())
                .or_default()
                .samples
                .push(s);
        }
        // ---- 3: redirect vs proxied 0-byte GET.
        if wants(&opts, "redirect") {
            for (label, url, expect) in [
                (
                    "redirect 307",
                    format!("{}/bench-redirect/zero", gw.base),
                    307u16,
                ),
                ("proxied 0-byte", format!("{}/bench/zero", gw.base), 200),
                ("direct 0-byte", format!("{direct}/b0/bench/zero"), 200),
            ] {
                let pid = if label.starts_with("direct") {
                    None
                } else {
                    Some(gpid)
                };
                let s = measure(
                    &driver,
                    pid,
                    bpid,
                    16,
                    200_000,
                    small_time,
                    expect,
                    move |_| (Method::GET, url.clone(), Payload::None),
                )
                .await;
                rows.entry(format!("GET {label} c=16"))
                    .or_default()
                    .samples
                    .push(s);
            }
        }
    }

    let get = |rows: &BTreeMap<String, Row>, k: &str| rows.get(k).cloned().unwrap_or_default();
    if do_large {
        lines.push(
            "## Large objects (64 MiB, c=1), MB/s; CPU ms per op of the proxy process".into(),
        );
        lines.push("| op | direct MB/s | proxy MB/s | nginx MB/s | proxy/direct | nginx/direct | proxy/nginx | proxy CPU ms/op | nginx CPU ms/op |".into());
        lines.push("|---|---|---|---|---|---|---|---|---|".into());
        for op in ["GET", "PUT"] {
            let d = get(&rows, &format!("large {op} direct"));
            let p = get(&rows, &format!("large {op} proxy"));
            let n = get(&rows, &format!("large {op} nginx"));
            lines.push(format!(
                "| {op} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
                d.mbps(),
                p.mbps(),
                n.mbps(),
                p.mbps() / d.mbps(),
                n.mbps() / d.mbps(),
                p.mbps() / n.mbps(),
                p.cpu(),
                n.cpu()
            ));
            goal(
                &mut goals,
                &format!("64 MiB {op}: proxy >= 95% of direct"),
                format!("{:.2}", p.mbps() / d.mbps()),
                Some(p.mbps() / d.mbps() >= 0.95),
            );
            goal(
                &mut goals,
                &format!("64 MiB {op}: proxy no slower than nginx (3% noise allowed)"),
                format!("{:.2}", p.mbps() / n.mbps()),
                Some(p.mbps() / n.mbps() >= 0.97),
            );
        }
        let s = get(&rows, "large GET proxy-signed");
        lines.push(format!(
            "Signed (SigV4 header, verified) 64 MiB GET through the proxy: {:.0} MB/s, {:.1} CPU ms/op",
            s.mbps(), s.cpu()
        ));
        lines.push(String::new());
    }
    if do_small {
        lines.push(
            "## Small objects (4 KiB): ops/s, p50/p99 in us; CPU ms per op of the proxy process"
                .into(),
        );
        lines.push("| op | c | path | ops/s | ratio to direct | p50 us | p99 us | added p50 us | proxy CPU ms/op | backend CPU ms/op |".into());
        lines.push("|---|---|---|---|---|---|---|---|---|---|".into());
        for op in ["GET", "PUT"] {
            for c in [1, 16] {
                let d = get(&rows, &format!("small {op} c={c} direct"));
                for path in ["direct", "proxy", "nginx", "bare"] {
                    let r = get(&rows, &format!("small {op} c={c} {path}"));
                    lines.push(format!(
                        "| {op} | {c} | {path} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
                        r.ops(), r.ops() / d.ops(), r.p50(), r.p99(), r.p50() - d.p50(), r.cpu(), r.backend_cpu()
                    ));
                }
                if c == 16 {
                    let p = get(&rows, &format!("small {op} c=16 proxy"));
                    goal(
                        &mut goals,
                        &format!("4 KiB {op} c=16: proxy >= 85% of direct ops/s"),
                        format!("{:.2}", p.ops() / d.ops()),
                        Some(p.ops() / d.ops() >= 0.85),
                    );
                    goal(
                        &mut goals,
                        &format!("4 KiB {op} c=16: added p50 < 150 us"),
                        format!("{:.0} us", p.p50() - d.p50()),
                        Some(p.p50() - d.p50() < 150.0),
                    );
                }
            }
        }
        let s = get(&rows, "small GET c=16 proxy-signed");
        let d = get(&rows, "small GET c=16 direct");
        lines.push(format!(
            "| GET | 16 | proxy, signed | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
            s.ops(),
            s.ops() / d.ops(),
            s.p50(),
            s.p99(),
            s.p50() - d.p50(),
            s.cpu(),
            s.backend_cpu()
        ));
        lines.push(String::new());
    }
    if wants(&opts, "redirect") {
        lines.push("## Redirect mode (GET, c=16)".into());
        lines.push("| answer | req/s | p50 us | p99 us | gateway CPU ms/op |".into());
        lines.push("|---|---|---|---|---|".into());
        for label in ["redirect 307", "proxied 0-byte", "direct 0-byte"] {
            let r = get(&rows, &format!("GET {label} c=16"));
            lines.push(format!(
                "| {label} | {:.0} | {:.0} | {:.0} | {:.3} |",
                r.ops(),
                r.p50(),
                r.p99(),
                r.cpu()
            ));
        }
        let (r, p) = (
            get(&rows, "GET redirect 307 c=16"),
            get(&rows, "GET proxied 0-byte c=16"),
        );
        goal(
            &mut goals,
            "redirect req/s >= 10x proxied 0-byte GET",
            format!("{:.2}x", r.ops() / p.ops()),
            Some(r.ops() / p.ops() >= 10.0),
        );
        lines.push(String::new());
    }
    // ---- Headline: CPU per operation of the gateway beside nginx's (issue 15).
    let mut headline = Vec::new();
    let mut head = serde_json::Map::new();
    if do_small || wants(&opts, "redirect") {
        headline.push("## Headline: CPU per operation, gateway vs nginx (same run)".into());
        headline.push(
            "| figure | gateway CPU ms/op | reference | reference CPU ms/op | ratio | goal |"
                .into(),
        );
        headline.push("|---|---|---|---|---|---|".into());
    }
    if do_small {
        for (op, c, limit) in [
            ("GET", 16, Some(1.2)),
            ("PUT", 16, Some(1.5)),
            ("GET", 1, None),
            ("PUT", 1, None),
        ] {
            let p = get(&rows, &format!("small {op} c={c} proxy"));
            let n = get(&rows, &format!("small {op} c={c} nginx"));
            let ratio = p.cpu() / n.cpu();
            headline.push(format!(
                "| 4 KiB {op} c={c} | {:.3} | nginx | {:.3} | {ratio:.2}x | {} |",
                p.cpu(),
                n.cpu(),
                limit.map_or("-".to_owned(), |l| format!("<= {l}x"))
            ));
            head.insert(
                format!("cpu_ratio_{}_c{c}_to_nginx", op.to_lowercase()),
                json!(ratio),
            );
            if let Some(l) = limit {
                goal(
                    &mut goals,
                    &format!("4 KiB {op} c={c}: gateway CPU/op <= {l}x nginx's"),
                    format!("{ratio:.2}x ({:.3} vs {:.3} ms)", p.cpu(), n.cpu()),
                    Some(ratio <= l),
                );
            }
        }
        // The floor: how much of the distance to nginx is the HTTP stack's, how much ours.
        for op in ["GET", "PUT"] {
            let b = get(&rows, &format!("small {op} c=16 bare"));
            let n = get(&rows, &format!("small {op} c=16 nginx"));
            let p = get(&rows, &format!("small {op} c=16 proxy"));
            headline.push(format!(
                "| floor: bare hyper proxy, 4 KiB {op} c=16 | {:.3} | nginx | {:.3} | {:.2}x | - |",
                b.cpu(),
                n.cpu(),
                b.cpu() / n.cpu()
            ));
            headline.push(format!(
                "| gateway over the floor, 4 KiB {op} c=16 | {:.3} | bare hyper proxy | {:.3} | {:.2}x | - |",
                p.cpu(),
                b.cpu(),
                p.cpu() / b.cpu()
            ));
            head.insert(
                format!("cpu_ratio_bare_{}_c16_to_nginx", op.to_lowercase()),
                json!(b.cpu() / n.cpu()),
            );
            head.insert(
                format!("cpu_ratio_{}_c16_to_bare", op.to_lowercase()),
                json!(p.cpu() / b.cpu()),
            );
        }
        let (d, p, n) = (
            get(&rows, "small GET c=1 direct"),
            get(&rows, "small GET c=1 proxy"),
            get(&rows, "small GET c=1 nginx"),
        );
        let added = p.p50() - d.p50();
        headline.push(format!(
            "| added p50 latency, 4 KiB GET c=1 (us, to direct) | {added:.0} | nginx | {:.0} | - | <= 100 us |",
            n.p50() - d.p50()
        ));
        head.insert("added_p50_us_get_c1".into(), json!(added));
        head.insert("nginx_added_p50_us_get_c1".into(), json!(n.p50() - d.p50()));
        goal(
            &mut goals,
            "4 KiB GET c=1: added p50 <= 100 us",
            format!("{added:.0} us"),
            Some(added <= 100.0),
        );
    }
    if wants(&opts, "redirect") {
        let (r, p) = (
            get(&rows, "GET redirect 307 c=16"),
            get(&rows, "GET proxied 0-byte c=16"),
        );
        let ratio = r.cpu() / p.cpu();
        headline.push(format!(
            "| 307 redirect c=16 | {:.3} | proxied 0-byte GET | {:.3} | {ratio:.2}x | <= 0.4x and <= 0.020 ms |",
            r.cpu(),
            p.cpu()
        ));
        head.insert("cpu_ratio_redirect_to_proxied_get".into(), json!(ratio));
        head.insert("redirect_cpu_ms".into(), json!(r.cpu()));
        goal(
            &mut goals,
            "307 redirect: CPU/op <= 0.4x a proxied 0-byte GET's",
            format!("{ratio:.2}x"),
            Some(ratio <= 0.4),
        );
        goal(
            &mut goals,
            "307 redirect: CPU/op <= 0.020 ms",
            format!("{:.3} ms", r.cpu()),
            Some(r.cpu() <= 0.020),
        );
    }
    if !headline.is_empty() {
        headline.push(String::new());
        lines.splice(0..0, headline);
        report.insert("headline".into(), Value::Object(head));
    }
    report.insert(
        "rows".into(),
        Value::Object(rows.iter().map(|(k, r)| (k.clone(), r.json())).collect()),
    );

    // ---- 5: memory.
    if wants(&opts, "memory") {
        let chunk = Bytes::from(vec![0x11u8; MIB]);
        let mut mem = serde_json::Map::new();
        let baseline = status_kib(gpid, "VmRSS:");
        let mut line = vec![format!(
            "gateway RSS before: {:.1} MiB",
            baseline as f64 / 1024.0
        )];
        for (dir, method) in [("up (PUT)", Method::PUT), ("down (GET)", Method::GET)] {
            // Writing 5 to clear_refs resets VmHWM to the current RSS.
            let _ = std::fs::write(format!("/proc/{gpid}/clear_refs"), "5");
            let payload = if method == Method::PUT {
                Payload::Repeat(chunk.clone(), 1024)
            } else {
                Payload::None
            };
            let started = Instant::now();
            let o = driver
                .send(method, &format!("{}/bench/gib", gw.base), &payload)
                .await;
            let secs = started.elapsed().as_secs_f64();
            let hwm = status_kib(gpid, "VmHWM:");
            let ok = matches!(&o, Ok(o) if o.status == 200);
            line.push(format!(
                "1 GiB {dir}: peak RSS {:.1} MiB, {:.0} MB/s{}",
                hwm as f64 / 1024.0,
                (1u64 << 30) as f64 / secs / 1e6,
                if ok { "" } else { " (FAILED)" }
            ));
            mem.insert(
                dir.into(),
                json!({"peak_rss_kib": hwm, "seconds": secs, "ok": ok}),
            );
            goal(
                &mut goals,
                &format!("peak RSS < 64 MiB while 1 GiB streams {dir}"),
                format!("{:.1} MiB", hwm as f64 / 1024.0),
                Some(ok && hwm < 64 * 1024),
            );
        }
        let _ = driver
            .send(
                Method::DELETE,
                &format!("{}/bench/gib", gw.base),
                &Payload::None,
            )
            .await;
        mem.insert("rss_before_kib".into(), json!(baseline));
        report.insert("memory".into(), Value::Object(mem));
        lines.push("## Memory (gateway process, VmHWM)".into());
        lines.extend(line);
        lines.push(String::new());
    }
    drop(nginx);
    drop(bare);
    drop(gw);

    // ---- 6: scale.
    if wants(&opts, "scale") {
        let scale = scale(
            &opts,
            &driver,
            backend_port,
            &direct,
            &mut goals,
            &mut lines,
        )
        .await;
        report.insert("scale".into(), scale);
    }
    // ---- 8: metadata stores.
    if wants(&opts, "stores") {
        let stores = stores(&opts, &driver, backend_port, bpid, rounds, &mut lines).await;
        report.insert("stores".into(), stores);
    }
    drop(backend);

    // ---- 4: decision path (criterion).
    let decision = criterion_results(&opts, &mut goals, &mut lines);
    report.insert("decision_ns".into(), decision);

    // ---- 7: edge and Lambda.
    lines.push(
        "## Edge (Cloudflare Worker) and Lambda (scripts/worker-size, scripts/lambda-size)".into(),
    );
    let mut edge = serde_json::Map::new();
    for f in &opts.edge {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_owned();
        lines.push(format!("{name}: {}", text.trim().replace('\n', "\n  ")));
        edge.insert(name, json!(text.trim()));
    }
    report.insert("edge".into(), Value::Object(edge));
    lines.push(String::new());

    // Goals.
    lines.push("## Goals".into());
    lines.push("| goal | measured | met |".into());
    lines.push("|---|---|---|".into());
    for g in &goals {
        lines.push(format!(
            "| {} | {} | {} |",
            g.what,
            g.value,
            match g.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "n/a",
            }
        ));
    }
    report.insert(
        "goals".into(),
        Value::Array(
            goals
                .iter()
                .map(|g| json!({"goal": g.what, "measured": g.value, "met": g.met}))
                .collect(),
        ),
    );
    report.insert("quick".into(), json!(quick));
    report.insert("placement".into(), json!(placement));
    report.insert("cores".into(), json!(cores));
    report.insert("rounds".into(), json!(rounds));
    lines.insert(0, format!("{placement}\n"));
    let text = lines.join("\n");
    println!("{text}");
    report.insert("table".into(), json!(text));
    std::fs::write(
        &opts.out,
        serde_json::to_string_pretty(&Value::Object(report.into_iter().collect())).unwrap(),
    )
    .expect("write report");
    eprintln!("report written to {}", opts.out.display());
    0
}

/// GET latency and list pages against 1..16 backends, and GET latency against index size.
async fn scale(
    opts: &Options,
    driver: &Driver,
    backend_port: u16,
    direct: &str,
    goals: &mut Vec<Goal>,
    lines: &mut Vec<String>,
) -> Value {
    let quick = opts.quick;
    let time = Duration::from_millis(if quick { 400 } else { 1500 });
    let counts = [1usize, 2, 4, 8, 16];
    let names: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    let mut virtuals = String::new();
    for n in counts {
        virtuals.push_str(&format!(
            "  - name: scale{n}\n    virtual: true\n    backends: [{}]\n",
            names[..n].join(", ")
        ));
    }
    let db = opts.work.join("scale.db");
    let _ = std::fs::remove_file(&db);
    let port = free_port();
    let gw = start_gateway(
        opts,
        "gateway-scale",
        gateway_config(port, &db, backend_port, &names, &virtuals),
        driver,
    )
    .await;
    let mut out = serde_json::Map::new();
    lines.push("## Scale: backends (1,000 keys spread over N backends; c=1)".into());
    lines.push("| backends | GET p50 us | GET p99 us | list 1,000 keys p50 us | list p99 us | gateway CPU ms/list |".into());
    lines.push("|---|---|---|---|---|---|".into());
    let mut list_p50 = BTreeMap::new();
    for n in counts {
        // 1,000 objects straight into the backends' buckets, under the virtual bucket's prefix.
        let direct2 = direct.to_owned();
        run_load(driver, 16, 1000, Duration::from_secs(60), 200, move |i| {
            (
                Method::PUT,
                format!("{direct2}/s{}/scale{n}/k{i:05}", i % n as u64),
                Payload::Bytes(Bytes::from_static(b"0123456789abcdef")),
            )
        })
        .await;
        // First reads miss the index, probe, and repair it: done before measuring.
        let base = format!("{}/scale{n}", gw.base);
        let b2 = base.clone();
        run_load(driver, 16, 1000, Duration::from_secs(60), 200, move |i| {
            (Method::GET, format!("{b2}/k{i:05}"), Payload::None)
        })
        .await;
        let b2 = base.clone();
        let get = measure(
            driver,
            Some(gw.proc.pid()),
            0,
            1,
            100_000,
            time,
            200,
            move |i| {
                (
                    Method::GET,
                    format!("{b2}/k{:05}", (i * 7919) % 1000),
                    Payload::None,
                )
            },
        )
        .await;
        let b2 = base.clone();
        let list = measure(
            driver,
            Some(gw.proc.pid()),
            0,
            1,
            10_000,
            time,
            200,
            move |_| {
                (
                    Method::GET,
                    format!("{b2}?list-type=2&max-keys=1000"),
                    Payload::None,
                )
            },
        )
        .await;
        lines.push(format!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            get.stats.p50_us,
            get.stats.p99_us,
            list.stats.p50_us,
            list.stats.p99_us,
            list.proxy_cpu_ms
        ));
        list_p50.insert(n, list.stats.p50_us);
        out.insert(
            format!("backends_{n}"),
            json!({
                "get_p50_us": get.stats.p50_us, "get_p99_us": get.stats.p99_us,
                "list_p50_us": list.stats.p50_us, "list_p99_us": list.stats.p99_us,
                "list_cpu_ms": list.proxy_cpu_ms, "get_cpu_ms": get.proxy_cpu_ms,
            }),
        );
    }
    let growth = list_p50[&16] / list_p50[&1];
    goal(
        goals,
        "list page at most linear in backends (p50 16 backends / 1 backend <= 16)",
        format!("{growth:.2}x"),
        Some(growth <= 16.0),
    );
    drop(gw);
    lines.push(String::new());

    lines.push("## Scale: index size (SQLite rows; GET of indexed keys, c=1)".into());
    lines.push("| index entries | GET p50 us | GET p99 us | gateway CPU ms/op |".into());
    lines.push("|---|---|---|---|".into());
    let sizes: &[u64] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000]
    };
    let mut p50s = Vec::new();
    for &size in sizes {
        let db = opts.work.join(format!("index-{size}.db"));
        let _ = std::fs::remove_file(&db);
        let samples = prefill_index(&db, size).expect("prefill SQLite");
        for key in &samples {
            driver
                .send(
                    Method::PUT,
                    &format!("{direct}/b0/idx/{key}"),
                    &Payload::Bytes(Bytes::from_static(b"0123456789abcdef")),
                )
                .await
                .expect("seed");
        }
        let port = free_port();
        let virtuals = "  - name: idx\n    virtual: true\n    backends: [b0]\n";
        let gw = start_gateway(
            opts,
            &format!("gateway-index-{size}"),
            gateway_config(port, &db, backend_port, &["b0".into()], virtuals),
            driver,
        )
        .await;
        let base = format!("{}/idx", gw.base);
        let samples2 = samples.clone();
        let b2 = base.clone();
        // Warm the connection pool and SQLite's page cache for the sampled rows.
        run_load(driver, 4, 400, Duration::from_secs(10), 200, move |i| {
            (
                Method::GET,
                format!("{b2}/{}", samples2[i as usize % samples2.len()]),
                Payload::None,
            )
        })
        .await;
        let b2 = base.clone();
        let s = measure(
            driver,
            Some(gw.proc.pid()),
            0,
            1,
            100_000,
            time,
            200,
            move |i| {
                (
                    Method::GET,
                    format!("{b2}/{}", samples[(i as usize * 31) % samples.len()]),
                    Payload::None,
                )
            },
        )
        .await;
        lines.push(format!(
            "| {size} | {:.0} | {:.0} | {:.3} |",
            s.stats.p50_us, s.stats.p99_us, s.proxy_cpu_ms
        ));
        out.insert(format!("index_{size}"), json!({"get_p50_us": s.stats.p50_us, "get_p99_us": s.stats.p99_us, "cpu_ms": s.proxy_cpu_ms}));
        p50s.push(s.stats.p50_us);
        drop(gw);
        let _ = std::fs::remove_file(&db);
    }
    let ratio = p50s[p50s.len() - 1] / p50s[0];
    goal(
        goals,
        &format!(
            "GET latency flat in index size (p50 at {} / at {} <= 1.25)",
            sizes[sizes.len() - 1],
            sizes[0]
        ),
        format!("{ratio:.2}x"),
        Some(ratio <= 1.25),
    );
    lines.push(String::new());
    Value::Object(out)
}

/// Writes `size` rows of virtual bucket `idx` in the server's schema (server/src/store.rs);
/// returns 100 keys spread over the key space.
fn prefill_index(db: &Path, size: u64) -> rusqlite::Result<Vec<String>> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS objects (
            bucket TEXT NOT NULL, key TEXT NOT NULL,
            backend TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified INTEGER NOT NULL,
            PRIMARY KEY (bucket, key)
        ) WITHOUT ROWID;",
    )?;
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare(
            "INSERT INTO objects (bucket, key, backend, size, etag, last_modified) VALUES ('idx', ?1, 'b0', 16, '\"0\"', 1735689600)",
        )?;
        for i in 0..size {
            st.execute([format!("key{i:08}")])?;
        }
    }
    tx.commit()?;
    let step = (size / 100).max(1);
    Ok((0..size)
        .step_by(step as usize)
        .take(100)
        .map(|i| format!("key{i:08}"))
        .collect())
}

/// Medians (ns) from criterion's `estimates.json` files under `--criterion`.
fn criterion_results(opts: &Options, goals: &mut Vec<Goal>, lines: &mut Vec<String>) -> Value {
    let mut found = BTreeMap::new();
    if let Some(dir) = &opts.criterion {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n == "new") {
                        let bench: Option<Value> =
                            std::fs::read_to_string(p.join("benchmark.json"))
                                .ok()
                                .and_then(|t| serde_json::from_str(&t).ok());
                        let est: Option<Value> = std::fs::read_to_string(p.join("estimates.json"))
                            .ok()
                            .and_then(|t| serde_json::from_str(&t).ok());
                        if let (Some(b), Some(e)) = (bench, est) {
                            if let (Some(id), Some(m)) = (
                                b["full_id"].as_str(),
                                e["median"]["point_estimate"].as_f64(),
                            ) {
                                found.insert(id.to_owned(), m);
                            }
                        }
                    } else {
                        stack.push(p);
                    }
                }
            }
        }
    }
    lines.push("## Decision path (criterion medians, one core)".into());
    if found.is_empty() {
        lines.push("no criterion results found (run `cargo bench -p s3-balance-shared --features testing --bench decision`)".into());
    } else {
        lines.push("| benchmark | median |".into());
        lines.push("|---|---|".into());
        for (id, ns) in &found {
            lines.push(format!("| {id} | {} |", fmt_ns(*ns)));
        }
    }
    lines.push(String::new());
    if let Some(ns) = found.get("decision/full GET (route+verify+index+place+presign)") {
        goal(
            goals,
            "GET decision < 10 us (issue 2: < 20 us)",
            fmt_ns(*ns),
            Some(*ns < 10_000.0),
        );
    }
    if let Some(ns) = found.get("listing/merge 5x1000") {
        goal(
            goals,
            "listing merge 5 x 1000 keys < 2 ms",
            fmt_ns(*ns),
            Some(*ns < 2_000_000.0),
        );
    }
    Value::Object(found.into_iter().map(|(k, v)| (k, json!(v))).collect())
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The metadata section `gateway_config` writes, to be replaced for another store.
fn sqlite_section(db: &Path) -> String {
    format!("metadata:\n  type: sqlite\n  path: \"{}\"\n", db.display())
}

/// A moto_server for the DynamoDB row, with the table created; `None` when moto is missing.
async fn start_moto_dynamodb(opts: &Options) -> Option<(Proc, String)> {
    let port = free_port();
    let log = std::fs::File::create(opts.work.join("moto.log")).ok()?;
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .ok()?;
    let proc = Proc {
        name: "moto".into(),
        child,
    };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&url)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .build();
    let store =
        dynamo_store::DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), "bench");
    store.create_table().await.ok()?;
    Some((proc, url))
}

/// 4 KiB GET and PUT through one gateway per metadata store (SQLite, PostgreSQL, MySQL
/// (MariaDB), DynamoDB on moto), interleaved rounds; ratios to SQLite of the same run. Every
/// GET reads the index; every PUT reads it (existing copy?) and writes it.
async fn stores(
    opts: &Options,
    driver: &Driver,
    backend_port: u16,
    bpid: u32,
    rounds: usize,
    lines: &mut Vec<String>,
) -> Value {
    use shared::config::SqlKind;
    use sql_store::testing::TestServer;

    let virtuals = "  - name: bench\n    virtual: true\n    backends: [b0]\n";
    let db = opts.work.join("stores-sqlite.db");
    let _ = std::fs::remove_file(&db);
    let config = |port: u16, metadata: Option<String>| {
        let c = gateway_config(port, &db, backend_port, &["b0".into()], virtuals);
        match metadata {
            Some(m) => c.replace(&sqlite_section(&db), &m),
            None => c,
        }
    };
    // Servers first (kept alive until the end), then one gateway each.
    let postgres = TestServer::start(SqlKind::Postgres);
    let mariadb = TestServer::start(SqlKind::MySql);
    let moto = start_moto_dynamodb(opts).await;
    let mut metadata: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    let mut missing = Vec::new();
    match &postgres {
        Some(s) => metadata.push((
            "postgres",
            Some(format!(
                "metadata:\n  type: postgres\n  url: \"{}\"\n",
                s.create_database("bench")
            )),
        )),
        None => missing.push("postgres (apt-get install postgresql)"),
    }
    match &mariadb {
        Some(s) => metadata.push((
            "mysql",
            Some(format!(
                "metadata:\n  type: mysql\n  url: \"{}\"\n",
                s.create_database("bench")
            )),
        )),
        None => missing.push("mysql (apt-get install mariadb-server)"),
    }
    match &moto {
        Some((_, url)) => {
            // Read by the gateways started below (the standard AWS environment).
            std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", url);
            std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
            std::env::set_var("AWS_REGION", "us-east-1");
            metadata.push((
                "dynamodb",
                Some("metadata:\n  type: dynamodb\n  table: bench\n".to_owned()),
            ));
        }
        None => missing.push("dynamodb (moto_server: pip install 'moto[server]')"),
    }
    let small = Bytes::from(vec![0x5au8; 4096]);
    let mut gateways = Vec::new();
    for (name, m) in metadata {
        let gw = start_gateway(
            opts,
            &format!("store-{name}"),
            config(free_port(), m),
            driver,
        )
        .await;
        let o = driver
            .send(
                Method::PUT,
                &format!("{}/bench/small", gw.base),
                &Payload::Bytes(small.clone()),
            )
            .await
            .expect("seed PUT");
        assert_eq!(o.status, 200, "seed PUT through the {name} gateway");
        gateways.push((name, gw));
    }
    let time = Duration::from_millis(if opts.quick { 400 } else { 1500 });
    let mut rows: BTreeMap<(String, usize, String), Row> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("stores round {}/{rounds}", round + 1);
        for (name, gw) in &gateways {
            for c in [1usize, 16] {
                for op in ["GET", "PUT"] {
                    let base = format!("{}/bench", gw.base);
                    let small = small.clone();
                    let s = measure(
                        driver,
                        Some(gw.proc.pid()),
                        bpid,
                        c,
                        200_000,
                        time,
                        200,
                        move |i| {
                            if op == "GET" {
                                (Method::GET, format!("{base}/small"), Payload::None)
                            } else {
                                (
                                    Method::PUT,
                                    format!("{base}/put-{}", i % 256),
                                    Payload::Bytes(small.clone()),
                                )
                            }
                        },
                    )
                    .await;
                    rows.entry((op.to_owned(), c, (*name).to_owned()))
                        .or_default()
                        .samples
                        .push(s);
                }
            }
        }
    }
    drop(gateways);
    drop((postgres, mariadb, moto));

    lines.push(
        "## Metadata stores (4 KiB through one gateway per store): ops/s, p50/p99 in us; ratio to SQLite in the same run".into(),
    );
    lines.push(
        "| op | c | store | ops/s | ratio to sqlite | p50 us | p99 us | gateway CPU ms/op |".into(),
    );
    lines.push("|---|---|---|---|---|---|---|---|".into());
    let mut out = serde_json::Map::new();
    for ((op, c, store), row) in &rows {
        let base = rows
            .get(&(op.clone(), *c, "sqlite".to_owned()))
            .map(Row::ops)
            .unwrap_or(f64::NAN);
        lines.push(format!(
            "| {op} | {c} | {store} | {:.0} | {:.2} | {:.0} | {:.0} | {:.3} |",
            row.ops(),
            row.ops() / base,
            row.p50(),
            row.p99(),
            row.cpu()
        ));
        let mut j = row.json();
        j["ratio_to_sqlite"] = json!(row.ops() / base);
        out.insert(format!("{op} c={c} {store}"), j);
    }
    for m in &missing {
        lines.push(format!("not measured: {m}"));
    }
    lines.push(String::new());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_and_their_split() {
        assert_eq!(parse_core_list("0-1"), vec![0, 1]);
        assert_eq!(parse_core_list("0-3,8-11"), vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(parse_core_list("5"), vec![5]);
        assert!(parse_core_list("").is_empty());
        assert!(parse_core_list("x-1").is_empty());
        let p = Pinning::split(&(0..8).collect::<Vec<_>>());
        assert_eq!(
            (p.backend, p.proxy, p.client),
            (vec![0, 1, 2], vec![3, 4, 5], vec![6, 7])
        );
        let p = Pinning::split(&parse_core_list("0-3,8-12"));
        assert_eq!(
            (p.backend, p.proxy, p.client),
            (vec![0, 1, 2], vec![3, 8, 9, 10], vec![11, 12])
        );
        assert_eq!(core_list(&[3, 8, 9]), "3,8,9");
    }
}
