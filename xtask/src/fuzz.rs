//! `cargo xtask fuzz [--secs N] [--no-sanitizer] [TARGET...]`: every fuzz target of fuzz/ (cargo-fuzz, libFuzzer,
//! nightly) for N seconds each, from the seed corpora kept in fuzz/seeds/TARGET (test fixtures);
//! prints the executions and their rate per target. A crash stops with its reproducer in
//! fuzz/artifacts/TARGET: turn it into a regression unit test. Not part of `cargo xtask test`.
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, have, workspace_root};

pub(crate) const TARGETS: &[&str] = &[
    "http_head",
    "reassembly",
    "ring_record",
    "recording",
    "policy",
    "config",
    "backtest_csv",
    "detectors",
    "http2",
];

pub(crate) fn run(secs: u64, sanitizer: bool, only: &[String]) -> Result<()> {
    if !have("cargo-fuzz") {
        eprintln!("xtask: installing cargo-fuzz");
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    let root = workspace_root();
    let fuzz = root.join("fuzz");
    let targets: Vec<&str> = if only.is_empty() {
        TARGETS.to_vec()
    } else {
        only.iter().map(String::as_str).collect()
    };
    let mut report = Vec::new();
    for target in targets {
        if !TARGETS.contains(&target) {
            bail!("no fuzz target {target}; there are: {}", TARGETS.join(", "));
        }
        // A working copy of the seeds: libFuzzer adds what it finds to its first corpus
        // directory, and the repository keeps only the seeds.
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        // Seeds where the repository keeps some (a binary decoder starts from nothing well).
        let seeds = fuzz.join("seeds").join(target);
        let seeds = seeds.is_dir().then_some(seeds);
        let out = Command::new("cargo")
            .current_dir(&fuzz)
            .args(["+nightly", "fuzz", "run", target])
            .args(if sanitizer {
                &[][..]
            } else {
                &["--sanitizer", "none"][..]
            })
            // Beside the agent's build cache, not in the work tree (it grows to gigabytes).
            .arg("--target-dir")
            .arg(crate::target_dir().join("fuzz"))
            .arg(&corpus)
            .args(&seeds)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-print_final_stats=1",
                "-timeout=10",
            ])
            .arg("-rss_limit_mb=2048")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cargo fuzz run {target}"))?;
        let err = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| {
            err.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if !out.status.success() {
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("{}", tail.join("\n"));
            if err.contains("failed to build fuzz script") {
                bail!("fuzz target {target} does not build (above)");
            }
            bail!("fuzz target {target} failed: its reproducer is in fuzz/artifacts/{target}");
        }
        let runs = stat("number_of_executed_units").unwrap_or(0);
        let rate = runs as f64 / secs.max(1) as f64;
        println!("fuzz {target}: {runs} executions in {secs} s ({rate:.0}/s), no crash, no hang");
        report.push((target, runs, rate));
    }
    println!("\n== fuzzing: executions per target (aim: >= 10^7 each) ==");
    for (t, runs, rate) in report {
        println!(
            "{t:<14} {runs:>12} executions  {rate:>10.0}/s  {}",
            if runs >= 10_000_000 {
                "ok"
            } else {
                "below 10^7: run longer"
            }
        );
    }
    Ok(())
}
