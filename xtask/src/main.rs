//! `cargo xtask setup | run | test | bench | package | fuzz | soak`: the project's two README commands and their helpers.
//!
//! Every command first makes sure what it needs is installed (nightly rust-src, bpf-linker built
//! against Debian's LLVM 22, the Debian packages the tests drive), installing only what is missing.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod fuzz;
mod harness;
mod soak;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need, when it is missing.
    Setup,
    /// Build and run the agent (arguments after `--` go to `apiwatch`; default: `run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test tier: unit, replay, kernel (root) and system tests.
    Test,
    /// Benchmarks, printing ratios measured side by side in one run.
    Bench {
        /// Only these sections (saturation, h2, fixed-rate, components, replay; default: all).
        sections: Vec<String>,
    },
    /// Build the Debian package (cargo-deb) and check it with lintian; prints its path.
    Package,
    /// Fuzz every parser (cargo-fuzz, libFuzzer) for --secs each; prints executions per target.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Without AddressSanitizer (about 3 times the executions a second; panics, hangs and
        /// debug assertions still caught): for reaching an execution count, after ASan runs.
        #[arg(long)]
        no_sanitizer: bool,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// The agent for --minutes under 10k keep-alive connections and 1,000 new connections/s
    /// (not in CI): prints memory, connections and drops per minute; fails on growth or drops.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u32,
    },
}

/// Debian packages the tests and benchmarks start (on loopback) or drive.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "nginx",
    "curl",
    "wrk",
    "hey",
    "wget",
    "openssl",
    "python3",
    "iproute2",
    "procps",
    // setpriv (the least-privilege test), systemd-analyze (the unit's exposure score).
    "util-linux",
    "systemd",
    "prometheus",
    "prometheus-alertmanager",
    // The benchmark's reference: empty BPF programs on the syscall tracepoints.
    "bpftrace",
    // The benchmark's run time per program hit (bpftool prog show, with bpf_stats).
    "bpftool",
    // The kernel tier builds a small io_uring client (tests/fixtures/io_uring_client.c).
    "gcc",
    "liburing-dev",
    // The TLS tier's node https client and server (OpenSSL inside node, or Debian's libssl).
    "nodejs",
    // The TLS tier's Go crypto/tls: a client and a server built from the standard library, and
    // caddy (a Go TLS file server).
    "golang-go",
    "caddy",
    // A TLS library apiwatch does not decrypt (the JDK's own, in Java code), for the TLS tier's
    // blind-spot count by library: `java File.java` needs the compiler, so the JDK.
    "default-jdk-headless",
    // HTTP/2: h2load (load against nginx's h2c and h2, in the tests and the bench) and nghttp;
    // python's h2 (a connection opened before the agent) and grpcio (a real gRPC server and
    // client), both for Debian's /usr/bin/python3.
    "nghttp2-client",
    "python3-h2",
    "python3-grpcio",
];
/// What bpf-linker is built against (TOOLCHAIN.md: the default feature wants LLVM 23).
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    forget_cargo_run_env();
    std::env::set_current_dir(&root)?;
    match cli.command {
        Cmd::Setup => setup(),
        Cmd::Run { args } => {
            setup()?;
            cargo(&["build", "--release", "-p", "monitor"])?;
            let mut args = args;
            if args.is_empty() {
                args.push("run".into());
            }
            let bin = target_dir().join("release/apiwatch");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            exit_with(status)
        }
        Cmd::Test => test(),
        Cmd::Bench { sections } => {
            setup()?;
            bench::run(&sections)
        }
        Cmd::Package => {
            setup()?;
            println!("{}", package()?.display());
            Ok(())
        }
        Cmd::Fuzz {
            secs,
            no_sanitizer,
            targets,
        } => {
            setup()?;
            fuzz::run(secs, !no_sanitizer, &targets)
        }
        Cmd::Soak { minutes } => {
            setup()?;
            soak::run(minutes)
        }
    }
}

/// Builds target/debian/apiwatch_*.deb with cargo-deb (installed when missing) and fails on any
/// lintian error or warning (overrides, each justified, are in deploy/debian/lintian-overrides).
fn package() -> Result<PathBuf> {
    if !have("cargo-deb") {
        eprintln!("xtask: installing cargo-deb (about a minute)");
        cargo(&["install", "cargo-deb", "--locked", "--version", "3.8.0"])?;
    }
    apt_install(&["lintian", "dpkg-dev"])?;
    let out_dir = target_dir().join("debian");
    std::fs::create_dir_all(&out_dir)?;
    let _ = std::fs::remove_dir_all(out_dir.join("stale"));
    cargo(&[
        "deb",
        "-p",
        "monitor",
        "--output",
        out_dir.to_str().unwrap_or_default(),
    ])?;
    let version = env!("CARGO_PKG_VERSION");
    let deb = std::fs::read_dir(&out_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("apiwatch_{version}")) && n.ends_with(".deb"))
        })
        .context("cargo deb wrote no apiwatch package")?;
    run_ok(
        Command::new("lintian")
            .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
            .arg(&deb),
    )?;
    Ok(deb)
}

/// `cargo run` gives xtask the variables of its own package (CARGO_MANIFEST_DIR, CARGO_PKG_NAME,
/// ...), and every cargo xtask starts would inherit them. Build scripts that declare
/// `rerun-if-env-changed` on them (ring does, for CARGO_MANIFEST_DIR and CARGO_PKG_*) then see
/// them change between a build from xtask and one from a shell, and rebuild ring, rustls and
/// everything above them each time: the shared build cache stops working. Children get the
/// environment a shell has.
fn forget_cargo_run_env() {
    let names: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            k.to_str().is_some_and(|k| {
                k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_MANIFEST_")
                    || matches!(k, "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE")
            })
        })
        .collect();
    // The root is known by now (the caller read it first) and cached.
    let _ = workspace_root();
    for k in names {
        // SAFETY: called first thing in main, before xtask starts any thread.
        unsafe { std::env::remove_var(k) };
    }
}

/// The workspace this run of xtask was asked from: `cargo run` sets CARGO_MANIFEST_DIR for the
/// process too. The path compiled in is only the fallback: a target directory shared between
/// checkouts (the build cache) can hold an xtask binary built in another checkout, which cargo
/// finds fresh (its dep-info paths are relative), and that checkout's path would be baked in.
pub fn workspace_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        manifest_dir.parent().map(Path::to_path_buf).unwrap_or_default()
    })
    .clone()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn exit_with(status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        std::process::exit(status.code().unwrap_or(1))
    }
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run_ok(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_ok(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn setup() -> Result<()> {
    // Nightly with rust-src builds the eBPF crate (-Z build-std=core).
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false);
    if !installed {
        eprintln!("xtask: installing nightly rust-src");
        // The nightly toolchain is on the machine (TOOLCHAIN.md); only its rust-src is not.
        run_ok(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    if !have("bpf-linker") {
        apt_install(LLVM_PACKAGES)?;
        eprintln!("xtask: building bpf-linker against LLVM 22 (about 2 minutes)");
        run_ok(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    apt_install(DEBIAN_PACKAGES)?;
    pip_install(PYPI_PACKAGES)
}

/// From PyPI (Debian has no package of them), for the `python3` on PATH: validators the tests
/// run on apiwatch's exported documents and on its deployment files.
const PYPI_PACKAGES: &[(&str, &str)] = &[
    ("openapi-spec-validator", "openapi_spec_validator"),
    // The Kubernetes manifests against the Kubernetes schemas, offline (Debian's kubectl is
    // 1.20 and wants a cluster even for a client dry run).
    ("kubernetes-validate", "kubernetes_validate"),
];

fn pip_install(pkgs: &[(&str, &str)]) -> Result<()> {
    for (pkg, module) in pkgs {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            eprintln!("xtask: installing {pkg} from PyPI");
            run_ok(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                pkg,
            ]))?;
        }
    }
    Ok(())
}

fn test() -> Result<()> {
    setup()?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let in_ci = std::env::var_os("CI").is_some();
    // Tier 1 and 2: unit and replay tests, no root needed.
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "monitor-ebpf",
        "--lib",
        "--bins",
    ])?;
    cargo(&["test", "-p", "apiwatch-tests", "--test", "replay"])?;
    // The fuzz targets run only under `cargo xtask fuzz`: that they still build is checked here
    // (one once stopped building when a config struct grew, and nothing said so).
    let fuzz_check = target_dir().join("fuzz-check");
    cargo(&[
        "check",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bins",
        "--target-dir",
        fuzz_check.to_str().context("target dir is not UTF-8")?,
    ])?;
    // Tier 3 and 4: real kernel probes and real servers, one at a time (they share kernel state).
    if !root {
        if in_ci {
            bail!("kernel and system tests need root; CI runs as root, so this is a failure");
        }
        eprintln!("xtask: NOT ROOT: the kernel and system tests were not run (they need root)");
        return Ok(());
    }
    // Tests that drive the binary use the one users run: the release build, built first.
    cargo(&["build", "--release", "-p", "monitor", "--bin", "apiwatch"])?;
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("APIWATCH_BIN", target_dir().join("release/apiwatch")) };
    // The kernel tiers once per capture mode: what users get by default (auto: the socket
    // layer on this kernel), then the syscall-tracepoint fallback of older kernels.
    for mode in ["auto", "syscall"] {
        eprintln!("xtask: kernel tiers, capture mode {mode}");
        // SAFETY: set before the test process starts; no thread of ours reads it concurrently.
        unsafe { std::env::set_var("APIWATCH_TEST_CAPTURE_MODE", mode) };
        cargo(&[
            "test",
            "-p",
            "apiwatch-tests",
            "--test",
            "kernel",
            "--test",
            "tls",
            "--test",
            "http2",
            "--test",
            "boundary",
            "--test",
            "baseline",
            "--test",
            "alerts",
            "--",
            "--test-threads=1",
        ])?;
    }
    // SAFETY: as above.
    unsafe { std::env::remove_var("APIWATCH_TEST_CAPTURE_MODE") };
    for suite in ["system", "audit", "openapi", "deploy", "monitoring"] {
        cargo(&[
            "test",
            "-p",
            "apiwatch-tests",
            "--test",
            suite,
            "--",
            "--test-threads=1",
        ])?;
    }
    // Tier 5: the Debian package, lintian-clean, installed, run as the unit runs it, purged.
    let deb = package()?;
    // SAFETY: as above.
    unsafe { std::env::set_var("APIWATCH_DEB", &deb) };
    cargo(&["test", "-p", "apiwatch-tests", "--test", "package"])?;
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
