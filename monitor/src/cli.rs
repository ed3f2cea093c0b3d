//! Command line: `apiwatch run | record | replay | check | learn | backtest | audit`.
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::agent::{self, AgentOptions, Consumer, LiveAgent, Summary};
use crate::boundary::Policy;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::server::MetricsServer;
use crate::output::{Discard, ExchangeSink, FindingSink, JsonLines};
use crate::record::RecordWriter;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "apiwatch",
    version,
    about = "Watch the HTTP APIs on this host with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture live traffic and print one JSON line per HTTP exchange.
    Run(RunArgs),
    /// Capture live traffic into a recording file (secrets redacted before they are written).
    Record(RecordArgs),
    /// Run the pipeline over a recording, without root, printing the same exchange lines.
    Replay(ReplayArgs),
    /// Validate a configuration file; print every error with its location.
    Check(CheckArgs),
    /// Observe traffic and write a policy draft (services, routes, methods, auth, sources).
    Learn(LearnArgs),
    /// Run the anomaly detector over a CSV history (timestamp,value): what would have fired.
    Backtest(BacktestArgs),
    /// OpenAPI: draft a document from observed traffic, or compare one with it.
    #[command(subcommand)]
    Openapi(OpenapiCommand),
    /// The audit trail: check its hash chain, or ask who accessed what, when.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Detector updates per second on one core (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchDetector {
        #[arg(long, default_value_t = 1000)]
        series: usize,
        #[arg(long, default_value_t = 2000)]
        points: usize,
    },
    /// Policy evaluations per second on one core (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchPolicy {
        #[arg(long, default_value_t = 1000)]
        routes: usize,
        #[arg(long, default_value_t = 500_000)]
        evaluations: usize,
    },
    /// Send a test alert, firing then resolved, to every sink in the configuration and say what
    /// each answered (exit 1 if one did not take it).
    TestAlerts {
        #[arg(long)]
        config: PathBuf,
    },
    /// Alert engine throughput with a real spool in --dir (used by `cargo xtask bench`).
    #[command(hide = true)]
    BenchAlerts {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        repeats: usize,
        #[arg(long, default_value_t = 2_000)]
        alerts: usize,
        #[arg(long, default_value_t = 100)]
        per_flush: usize,
    },
}

/// Where observed routes come from: a running agent's /api/v1/routes, or a recording.
#[derive(Args, Debug)]
pub struct ObservedArgs {
    /// Replay this recording (no root needed) instead of asking a running agent.
    #[arg(long)]
    pub from_recording: Option<PathBuf>,
    /// The running agent's metrics address (default: metrics.listen of --config, or
    /// 127.0.0.1:9464).
    #[arg(long)]
    pub agent: Option<String>,
    /// Configuration (its policy's declared routes template the paths of a recording too).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Only this service (as in metrics: comm:port).
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum OpenapiCommand {
    /// An OpenAPI 3.0 document of what was observed: paths, methods, status codes, media types,
    /// auth schemes, and x-apiwatch counts, first/last seen and callers.
    Export {
        #[command(flatten)]
        from: ObservedArgs,
        /// Where it goes (YAML, or JSON when the name ends in .json); default standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Drift between a document and what was observed: shadow endpoints (seen, not
    /// documented), zombie endpoints (documented, not seen), and traffic without the auth the
    /// document requires; one finding line each.
    Diff {
        #[command(flatten)]
        from: ObservedArgs,
        #[arg(long)]
        spec: PathBuf,
        /// A documented operation not seen for this many days is a zombie (never seen: always).
        #[arg(long, default_value_t = 30)]
        zombie_days: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every link of the trail in DIR; print the first broken one (file:line) and exit 1.
    Verify { dir: PathBuf },
    /// Print the exchanges in DIR that match (JSON lines, as stored).
    Query {
        dir: PathBuf,
        /// From (inclusive): RFC 3339, Unix seconds, or an age such as 15m, 2h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Until (exclusive), the same forms.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// A route template, e.g. /users/{id}.
        #[arg(long)]
        route: Option<String>,
        /// A credential fingerprint (as in exchanges and findings).
        #[arg(long)]
        identity: Option<String>,
        /// A source address.
        #[arg(long)]
        source: Option<String>,
    },
    /// Audit records written per second on one core, with real segments in --dir (used by
    /// `cargo xtask bench`).
    #[command(hide = true)]
    Bench {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Configuration file (YAML); without it the embedded defaults apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only watch these processes (repeatable).
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Only trace the connections of processes with this name (comm, e.g. nginx; repeatable);
    /// added to capture.processes. Filtered in the kernel: other processes cost almost nothing.
    #[arg(long = "process")]
    pub processes: Vec<String>,
    /// Where the data path hooks the kernel (auto, socket, syscall); overrides capture.mode.
    #[arg(long = "capture-mode", value_parser = parse_capture_mode)]
    pub capture_mode: Option<crate::capture::kernel::CaptureMode>,
    /// Boundary policy file; overrides `policy` in the configuration.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Where exchange lines go: a file (appended), - for standard output, or off (metrics,
    /// findings and alerts only: the cheapest way to run).
    #[arg(long, default_value = "-")]
    pub exchanges: String,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Address of /metrics, /healthz, /readyz, /api/v1/routes (ip:port, or off); overrides
    /// metrics.listen.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Where finding lines go: a file (appended), - for standard output (with the exchanges), or off.
    #[arg(long, default_value = "-")]
    pub findings: String,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub duration: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long, default_value = "-")]
    pub exchanges: String,
    #[arg(long, default_value = "-")]
    pub findings: String,
    /// Also update the Prometheus families (not served), as a live run does: how `cargo xtask
    /// bench` measures the whole userspace pipeline.
    #[arg(long, hide = true)]
    pub with_metrics: bool,
}

#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// CSV with a header line and rows `timestamp,value` (ISO 8601 or epoch seconds).
    #[arg(long)]
    pub csv: PathBuf,
    /// Width of a seasonal bucket in seconds (default one hour; 168 of them make a week).
    #[arg(long, default_value_t = 3600)]
    pub interval: u64,
    /// Where rows `timestamp,value,score,anomaly` go (default standard output).
    #[arg(long, default_value = "-")]
    pub out: String,
}

#[derive(Args, Debug)]
pub struct LearnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long to observe, in seconds.
    #[arg(long)]
    pub duration: f64,
    /// Where the draft is written.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Configuration file (its policy, if it names one, is checked too).
    #[arg(long, required_unless_present = "policy")]
    pub config: Option<PathBuf>,
    /// Policy file.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

pub fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        // The HTTP client logs URLs, headers and bodies at debug and trace: sink URLs and
        // bodies carry secrets (Slack's URL, PagerDuty's routing key, webhook signatures).
        // Whatever RUST_LOG says, it stays silent; the sinks log what failed, without them.
        .filter_module("ureq", log::LevelFilter::Off)
        .filter_module("ureq_proto", log::LevelFilter::Off)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run(a),
        Command::Record(a) => record(a),
        Command::Replay(a) => replay(a),
        Command::Check(a) => check(a),
        Command::Learn(a) => learn(a),
        Command::Backtest(a) => backtest(a),
        Command::Audit(a) => audit(a),
        Command::Openapi(a) => openapi(a),
        Command::BenchDetector { series, points } => {
            let cfg = crate::baseline::DetectorConfig::default();
            let mut ds: Vec<crate::baseline::Detector> = (0..series)
                .map(|_| crate::baseline::Detector::new(&cfg))
                .collect();
            let start = std::time::Instant::now();
            let mut anomalies = 0usize;
            for p in 0..points {
                for (i, d) in ds.iter_mut().enumerate() {
                    let x = 100.0 + ((p * 7 + i * 13) % 17) as f64;
                    anomalies += d.update(&cfg, p as u64 * 300, x).anomaly as usize;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let n = series * points;
            let bytes = serde_json::to_vec(&ds[0]).map(|v| v.len()).unwrap_or(0);
            let mem = size_of::<crate::baseline::Detector>() + cfg.season_buckets * 24;
            println!(
                "detector: {n} updates over {series} series in {secs:.3}s = {:.0} updates/s on one core; {mem} bytes of memory per series ({bytes} bytes as JSON); {anomalies} anomalies on steady input",
                n as f64 / secs
            );
            Ok(())
        }
        Command::TestAlerts { config } => {
            let cfg = load_config(Some(&config))?;
            if cfg.alerts.sinks.is_empty() {
                anyhow::bail!("{}: no alerts.sinks configured", config.display());
            }
            if crate::alert::send_test_alerts(&cfg.alerts.sinks, &mut std::io::stdout()) {
                Ok(())
            } else {
                anyhow::bail!("not every sink took the test alert")
            }
        }
        Command::BenchAlerts {
            dir,
            repeats,
            alerts,
            per_flush,
        } => {
            let (rep, grouped, each) = crate::alert::bench(&dir, repeats, alerts, per_flush);
            println!(
                "alert engine: {rep:.0} repeats of a firing alert/s (deduplicated) | new alerts to a spool on disk: {grouped:.0}/s with group commit (fsync per {per_flush}) vs {each:.0}/s with an fsync each = {:.1}x",
                grouped / each.max(1e-9)
            );
            Ok(())
        }
        Command::BenchPolicy { routes, evaluations } => {
            let (n, secs, findings) = crate::boundary::bench(routes, evaluations);
            println!(
                "policy of {routes} routes: {n} evaluations in {secs:.3}s = {:.0} evaluations/s on one core ({findings} findings)",
                n as f64 / secs
            );
            Ok(())
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}")),
        None => Ok(Config::default()),
    }
}

fn options(common: &CommonArgs) -> Result<(AgentOptions, Config)> {
    let mut cfg = load_config(common.config.as_ref())?;
    if let Some(mode) = common.capture_mode {
        cfg.capture.mode = mode;
    }
    for p in &common.processes {
        if p.is_empty() || p.len() > 15 {
            anyhow::bail!("--process {p:?}: a process name (comm) is 1 to 15 bytes");
        }
        cfg.capture.processes.push(p.clone());
    }
    let policy_path = common
        .policy
        .clone()
        .or_else(|| cfg.policy_path(common.config.as_deref()));
    let opts = AgentOptions {
        kernel: cfg.kernel(),
        stream: cfg.stream(),
        routes: cfg.routes(),
        pids: common.pids.clone(),
        metrics: None,
        policy: policy_path
            .as_deref()
            .and_then(|p| Policy::load_or_last_good(p, Some(std::path::Path::new(&cfg.state_dir))))
            .map(Arc::new),
        policy_path,
        state_dir: Some(cfg.state_dir.clone().into()),
        baselines: cfg.baselines(),
        alerts: None,
        audit: cfg.audit(),
    };
    Ok((opts, cfg))
}

fn load_policy(path: Option<&std::path::Path>) -> Result<Option<Arc<Policy>>> {
    match path {
        Some(p) => Ok(Some(Arc::new(
            Policy::load(p).map_err(|e| anyhow::anyhow!("invalid policy:\n{e}"))?,
        ))),
        None => Ok(None),
    }
}

/// The per-install key of credential fingerprints, from the state directory.
fn install_key(cfg: &Config) {
    match crate::http::identity::load_or_create_install_key(std::path::Path::new(&cfg.state_dir)) {
        Ok(key) => crate::http::identity::set_install_key(key),
        Err(e) => match crate::http::identity::random_key() {
            Ok(key) => {
                crate::http::identity::set_install_key(key);
                log::warn!(
                    "cannot keep the fingerprint key in {} ({e}): a random key is kept in memory, so credential fingerprints change at each restart",
                    cfg.state_dir
                );
            }
            Err(r) => log::warn!(
                "cannot keep the fingerprint key in {} ({e}) nor make a random one ({r}): fingerprints use the fixed key",
                cfg.state_dir
            ),
        },
    }
}

/// Where JSON lines go: None for "off" (nothing is even serialized), standard output for "-",
/// else the file, appended (`run`: a restart keeps what was written) or created afresh (`replay`).
fn line_target(target: &str, append: bool) -> Result<Option<Box<dyn std::io::Write + Send>>> {
    Ok(match target {
        "off" => None,
        // Buffered: Stdout alone is line-buffered, a write(2) per exchange line (measured: most
        // of what exchange lines cost at saturation). The pipeline flushes after every batch.
        "-" => Some(Box::new(BufWriter::new(std::io::stdout()))),
        path => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(path)
                .with_context(|| format!("cannot open {path}"))?;
            Some(Box::new(BufWriter::new(f)))
        }
    })
}

fn finding_sink(target: &str, append: bool) -> Result<Box<dyn FindingSink>> {
    Ok(match line_target(target, append)? {
        Some(w) => Box::new(JsonLines::new(w)),
        None => Box::new(Discard),
    })
}

fn exchange_sink(target: &str, append: bool) -> Result<Box<dyn ExchangeSink>> {
    Ok(match line_target(target, append)? {
        Some(w) => Box::new(JsonLines::new(w)),
        None => Box::new(Discard),
    })
}

fn run(a: RunArgs) -> Result<()> {
    let (mut opts, mut cfg) = options(&a.common)?;
    if let Some(addr) = &a.metrics_addr {
        cfg.metrics.listen = addr.clone();
    }
    // The endpoint binds before the probes load, so a port in use fails fast and clearly.
    let mut _server = None;
    if let Some(m) = cfg.metrics() {
        let metrics = Arc::new(Metrics::new(&m, cfg.capture.ring_bytes));
        _server = Some(MetricsServer::start(m.listen, metrics.clone())?);
        log::info!(
            "metrics on http://{}/metrics (also /healthz, /readyz, /api/v1/routes)",
            m.listen
        );
        opts.metrics = Some(metrics);
    } else if cfg.metrics.listen != "off" {
        anyhow::bail!(
            "--metrics-addr must be ip:port or off, is {:?}",
            cfg.metrics.listen
        );
    }
    install_key(&cfg);
    // Alerts: each sink's spool first (what a previous run did not deliver goes out now), then
    // its delivery thread. Dropping `_sinks` at the end stops them.
    let alert_metrics = opts
        .metrics
        .as_ref()
        .map(|m| m.alerts.clone())
        .unwrap_or_default();
    let state_dir = std::path::Path::new(&cfg.state_dir);
    let _sinks =
        crate::alert::Sinks::start(&cfg.alerts.sinks, cfg.alerts.spool_max, state_dir, &alert_metrics)
            .with_context(|| {
                format!(
                    "cannot open the alert spools in {}",
                    state_dir.join("alerts").display()
                )
            })?;
    if !_sinks.queues.is_empty() {
        let names: Vec<&str> = _sinks.queues.iter().map(|q| q.name.as_str()).collect();
        log::info!("alerts go to {}", names.join(", "));
        opts.alerts = Some((cfg.alert_options(), _sinks.queues.clone()));
    }
    let consumer = Consumer::Exchanges(
        exchange_sink(&a.exchanges, true)?,
        Some(finding_sink(&a.findings, true)?),
    );
    let agent = LiveAgent::start(opts, consumer)?;
    log::info!("apiwatch is watching HTTP traffic on this host");
    wait(a.duration)?;
    finish(agent.stop()?)
}

fn record(a: RecordArgs) -> Result<()> {
    let (opts, _) = options(&a.common)?;
    let file = File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let out: Box<dyn std::io::Write + Send> = Box::new(BufWriter::new(file));
    let agent = LiveAgent::start(opts, Consumer::Record(RecordWriter::new(out)?))?;
    log::info!("recording to {}", a.out.display());
    wait(a.duration)?;
    finish(agent.stop()?)
}

fn replay(a: ReplayArgs) -> Result<()> {
    let cfg = load_config(a.config.as_ref())?;
    let policy_path = a.policy.clone().or_else(|| cfg.policy_path(a.config.as_deref()));
    let opts = AgentOptions {
        stream: cfg.stream(),
        routes: cfg.routes(),
        policy: load_policy(policy_path.as_deref())?,
        // A replay learns from the recording only: nothing is read from or saved to state_dir.
        baselines: cfg.baselines().map(|b| crate::baseline::live::BaselineOptions {
            state_file: None,
            ..b
        }),
        metrics: match cfg.metrics() {
            Some(m) if a.with_metrics => Some(Arc::new(Metrics::new(&m, cfg.capture.ring_bytes))),
            _ => None,
        },
        ..AgentOptions::default()
    };
    let file = File::open(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
    let findings = Some(finding_sink(&a.findings, false)?);
    let summary = agent::replay(
        BufReader::new(file),
        &opts,
        exchange_sink(&a.exchanges, false)?,
        findings,
    )?;
    finish(summary)
}

fn backtest(a: BacktestArgs) -> Result<()> {
    let input = File::open(&a.csv).with_context(|| format!("cannot open {}", a.csv.display()))?;
    // A history of any metric: no Poisson floor (it need not be a count), no absolute floor on
    // the scale (a CPU share of 0.13 must not be drowned by one meant for request rates).
    let cfg = crate::baseline::DetectorConfig {
        bucket_secs: a.interval.max(1),
        counts: false,
        min_scale: 0.0,
        ..Default::default()
    };
    let out: Box<dyn std::io::Write> = if a.out == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(BufWriter::new(
            File::create(&a.out).with_context(|| format!("cannot create {}", a.out))?,
        ))
    };
    let s = crate::baseline::backtest::run(BufReader::new(input), out, &cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.csv.display()))?;
    eprintln!(
        "backtest: {} rows, {} anomalous ({} episodes), {} while warming up",
        s.rows, s.anomalies, s.episodes, s.warming_up
    );
    Ok(())
}

fn learn(a: LearnArgs) -> Result<()> {
    let (opts, _) = options(&a.common)?;
    let learner = Arc::new(std::sync::Mutex::new(crate::boundary::learn::Learner::default()));
    let sink = Box::new(crate::output::Shared(learner.clone()));
    let agent = LiveAgent::start(opts, Consumer::Exchanges(sink, None))?;
    log::info!("learning from traffic for {}s", a.duration);
    wait(Some(a.duration))?;
    let summary = agent.stop()?;
    let draft = learner.lock().map(|l| l.draft()).unwrap_or_default();
    std::fs::write(&a.out, draft).with_context(|| format!("cannot write {}", a.out.display()))?;
    log::info!(
        "policy draft written to {}: review it, then `apiwatch check --policy` it",
        a.out.display()
    );
    finish(summary)
}

fn check(a: CheckArgs) -> Result<()> {
    let mut errors = Vec::new();
    let mut policy = a.policy.clone();
    if let Some(path) = &a.config {
        match Config::load(path) {
            Ok(cfg) => policy = policy.or_else(|| cfg.policy_path(Some(path))),
            Err(e) => errors.extend(e.0),
        }
    }
    if let Some(path) = &policy {
        if let Err(e) = Policy::load(path) {
            errors.extend(e.0);
        }
    }
    if errors.is_empty() {
        for f in a.config.iter().chain(policy.iter()) {
            println!("{}: ok", f.display());
        }
        return Ok(());
    }
    for e in &errors {
        eprintln!("{e}");
    }
    // The errors are the report: exit non-zero without wrapping them in another error.
    eprintln!("{} error(s)", errors.len());
    std::process::exit(1)
}

/// The inventory's routes, from a recording (replayed through the same pipeline) or a running
/// agent.
fn observed_routes(a: &ObservedArgs) -> Result<Vec<crate::metrics::openapi::ObservedRoute>> {
    let cfg = load_config(a.config.as_ref())?;
    let json = match &a.from_recording {
        Some(file) => {
            let policy_path = a.policy.clone().or_else(|| cfg.policy_path(a.config.as_deref()));
            let m = cfg.metrics().unwrap_or_else(|| {
                Config::default()
                    .metrics()
                    .expect("the default configuration has metrics")
            });
            let metrics = Arc::new(Metrics::new(&m, cfg.capture.ring_bytes));
            let opts = AgentOptions {
                stream: cfg.stream(),
                routes: cfg.routes(),
                policy: load_policy(policy_path.as_deref())?,
                metrics: Some(metrics.clone()),
                ..AgentOptions::default()
            };
            let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            agent::replay(BufReader::new(input), &opts, Box::new(Discard), None)?;
            let report = metrics
                .inventory
                .lock()
                .map_err(|_| anyhow::anyhow!("the inventory lock is poisoned"))?
                .report();
            serde_json::to_value(report)?
        }
        None => {
            let addr = a.agent.clone().unwrap_or_else(|| cfg.metrics.listen.clone());
            let url = format!("http://{addr}/api/v1/routes");
            let body = ureq::get(&url)
                .call()
                .with_context(|| {
                    format!("cannot reach the agent at {url} (is it running? --agent, or --from-recording)")
                })?
                .body_mut()
                .read_to_string()?;
            let v: serde_json::Value =
                serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
            v.get("routes")
                .cloned()
                .with_context(|| format!("{url} did not answer an inventory"))?
        }
    };
    Ok(serde_json::from_value(json)?)
}

fn openapi(cmd: OpenapiCommand) -> Result<()> {
    use crate::metrics::openapi as oa;
    match cmd {
        OpenapiCommand::Export { from, out } => {
            let routes = observed_routes(&from)?;
            let title = match &from.service {
                Some(s) => format!("{s} (observed by apiwatch)"),
                None => "APIs observed by apiwatch".to_string(),
            };
            let doc = oa::export(&routes, from.service.as_deref(), &title);
            let json = out
                .as_ref()
                .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
            let text = if json {
                serde_json::to_string_pretty(&doc)? + "\n"
            } else {
                serde_norway::to_string(&doc)?
            };
            match &out {
                Some(p) => {
                    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
                }
                None => print!("{text}"),
            }
            eprintln!("{} paths", doc.paths.paths.len());
            Ok(())
        }
        OpenapiCommand::Diff {
            from,
            spec,
            zombie_days,
        } => {
            let doc = crate::boundary::openapi::load(&spec)
                .map_err(|e| anyhow::anyhow!("invalid OpenAPI document:\n{e}"))?;
            let routes = observed_routes(&from)?;
            let name = spec.display().to_string();
            let found = oa::diff(
                &doc,
                &name,
                &routes,
                from.service.as_deref(),
                crate::clock::unix_now_ns(),
                zombie_days.saturating_mul(86_400_000_000_000),
            );
            for f in &found {
                println!("{}", f.to_json());
            }
            use crate::finding::FindingKind;
            let count = |k: FindingKind| found.iter().filter(|f| f.kind == k).count();
            eprintln!(
                "{} shadow endpoint(s), {} zombie endpoint(s), {} auth mismatch(es) against {name}",
                count(FindingKind::UndeclaredEndpoint),
                count(FindingKind::ZombieEndpoint),
                count(FindingKind::MissingAuth)
            );
            Ok(())
        }
    }
}

fn audit(cmd: AuditCommand) -> Result<()> {
    use crate::audit::verify;
    match cmd {
        AuditCommand::Verify { dir } => {
            let report = verify::verify(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            println!("{report}");
            if report.broken.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::Query {
            dir,
            since,
            until,
            service,
            route,
            identity,
            source,
        } => {
            let now = crate::clock::unix_now_ns();
            let time = |s: Option<String>| -> Result<Option<u64>> {
                s.map(|s| verify::parse_time(&s, now).map_err(anyhow::Error::msg))
                    .transpose()
            };
            let q = verify::Query {
                since_ns: time(since)?,
                until_ns: time(until)?,
                service,
                route,
                identity,
                source,
            };
            let mut out = BufWriter::new(std::io::stdout().lock());
            let n = verify::query(&dir, &q, &mut out)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            std::io::Write::flush(&mut out)?;
            eprintln!("{n} exchanges");
            Ok(())
        }
        AuditCommand::Bench { dir, records } => {
            let (n, secs, bytes) = crate::audit::bench(&dir, records)?;
            println!(
                "audit trail: {n} records in {secs:.3}s = {:.0} records/s on one core (chained, group commits of 1024, fdatasync each; {:.0} bytes/record on disk, closed segments gzip'd)",
                n as f64 / secs,
                bytes as f64 / n.max(1) as f64
            );
            Ok(())
        }
    }
}

/// Until the duration passes or SIGINT/SIGTERM arrives.
fn wait(duration: Option<f64>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let sleep = async {
            match duration {
                Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

fn finish(summary: Summary) -> Result<()> {
    eprintln!("{}", summary.line());
    Ok(())
}

fn parse_capture_mode(s: &str) -> Result<crate::capture::kernel::CaptureMode, String> {
    crate::capture::kernel::CaptureMode::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of auto, socket, syscall"))
}
