//! `cargo xtask soak --minutes N`: the agent under a steady, connection-heavy load for N
//! minutes (not part of CI): nginx holding 10,000 concurrent keep-alive connections that each
//! send a request a second, plus 1,000 new connections a second (one request each), all traced
//! on both sides. Prints, every minute, the agent's resident memory, its connection table and
//! what it dropped; passes when memory is flat after warm-up (at most 5% growth from minute 5 to
//! the end) and nothing was dropped. All on loopback; wrk's own duration bounds the load.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::harness::{Agent, cpu_seconds, wait_for_port};
use crate::{cargo, target_dir};

const PORT: u16 = 18594;
const METRICS_PORT: u16 = 18595;
const KEEPALIVE_CONNECTIONS: u32 = 10_000;
/// Connections opened (and closed) a second: 10 connections, each a request every 10 ms with
/// `Connection: close`, so wrk reconnects for every request.
const CHURN_CONNECTIONS: u32 = 10;
const WARM_UP_MINUTES: usize = 5;
const MAX_GROWTH: f64 = 0.05;

pub(crate) fn run(minutes: u32) -> Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    // APIWATCH_BIN soaks a given build (another allocator, an older commit), as the binary tiers
    // take it; else this tree's release build.
    let bin = match std::env::var_os("APIWATCH_BIN") {
        Some(bin) => std::path::PathBuf::from(bin),
        None => {
            cargo(&["build", "--release", "-p", "monitor"])?;
            target_dir().join("release/apiwatch")
        }
    };
    let work = std::env::temp_dir().join(format!("apiwatch-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = soak(&bin, &work, minutes);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn soak(bin: &Path, work: &Path, minutes: u32) -> Result<()> {
    let nginx = Guard(start_nginx(work)?);
    let agent = Agent::start(
        bin,
        &[
            "run",
            "--exchanges",
            "off",
            "--findings",
            "off",
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS_PORT}"),
        ],
        true,
    )?;
    let pid = agent.pid();
    let url = format!("http://127.0.0.1:{PORT}/");
    let per_second = script(work, "paced-1s.lua", 1000)?;
    let per_10ms = script(work, "paced-10ms.lua", 10)?;
    let duration = format!("-d{}s", minutes * 60 + 5);
    // 10,000 keep-alive connections at 1 request/s each: about 10k req/s.
    let keepalive = Guard(wrk(&[
        "-t1",
        &format!("-c{KEEPALIVE_CONNECTIONS}"),
        &duration,
        "--timeout",
        "10s",
        "-s",
        &per_second,
        &url,
    ])?);
    // About 1,000 new connections a second.
    let churn = Guard(wrk(&[
        "-t1",
        &format!("-c{CHURN_CONNECTIONS}"),
        &duration,
        "-H",
        "Connection: close",
        "-s",
        &per_10ms,
        &url,
    ])?);
    println!(
        "== soak: {minutes} min, nginx with {KEEPALIVE_CONNECTIONS} keep-alive connections at 1 req/s each \
         and ~1,000 new connections/s, both sides traced =="
    );
    println!(
        "minute | agent RSS KiB | of it anon KiB | agent CPU (cores) | connections tracked | exchanges/s | dropped (total)"
    );
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut last_exchanges = 0.0;
    let mut last_cpu = cpu_seconds(pid);
    let mut cores = Vec::new();
    for minute in 1..=minutes {
        let due = start + Duration::from_secs(60 * minute as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let kib = status_kib(pid, "VmRSS").context("the agent is gone")?;
        let anon = status_kib(pid, "RssAnon").unwrap_or(0);
        let metrics = scrape()?;
        let exchanges = sum(&metrics, "apiwatch_exchanges_total");
        let dropped = sum(&metrics, "apiwatch_events_dropped_total");
        let cpu = cpu_seconds(pid);
        println!(
            "{minute:>6} | {kib:>13} | {anon:>14} | {:>17.2} | {:>19} | {:>11.0} | {dropped:.0}",
            (cpu - last_cpu) / 60.0,
            sum(&metrics, "apiwatch_connections_tracked"),
            (exchanges - last_exchanges) / 60.0,
        );
        if (exchanges - last_exchanges) / 60.0 < 1_000.0 {
            bail!("the load is not running (fewer than 1,000 exchanges/s in minute {minute})");
        }
        cores.push((cpu - last_cpu) / 60.0);
        (last_exchanges, last_cpu) = (exchanges, cpu);
        rss.push(kib);
    }
    let metrics = scrape()?;
    let dropped = sum(&metrics, "apiwatch_events_dropped_total");
    drop(churn);
    drop(keepalive);
    drop(agent);
    drop(nginx);

    let from = rss[WARM_UP_MINUTES.min(rss.len()) - 1];
    let to = rss[rss.len() - 1];
    let growth = to as f64 / from as f64 - 1.0;
    println!(
        "RSS from minute {} to {minutes}: {from} -> {to} KiB ({:+.1}%, at most {:.0}%); events dropped: {dropped:.0}",
        WARM_UP_MINUTES.min(rss.len()),
        growth * 100.0,
        MAX_GROWTH * 100.0
    );
    // Two single samples can land at either end of the allocator's minute-to-minute swing; the
    // trend over every minute after warm-up says whether memory is growing.
    if let Some(slope) = trend_percent_per_10_minutes(&rss[WARM_UP_MINUTES.min(rss.len()) - 1..]) {
        println!(
            "RSS trend from minute {} to {minutes} (least squares): {slope:+.1}% per 10 minutes",
            WARM_UP_MINUTES.min(rss.len())
        );
    }
    let peak = cores.iter().copied().fold(0.0, f64::max);
    println!(
        "agent: peak RSS {} KiB, peak CPU {peak:.2} cores (a minute's average)",
        rss.iter().max().copied().unwrap_or(0)
    );
    if minutes as usize <= WARM_UP_MINUTES {
        println!("(shorter than the {WARM_UP_MINUTES}-minute warm-up: the growth figure says little)");
    }
    if growth > MAX_GROWTH || dropped > 0.0 {
        bail!(
            "soak failed: memory grew {:.1}% after warm-up, {dropped:.0} events dropped",
            growth * 100.0
        );
    }
    println!("soak passed");
    Ok(())
}

/// The least-squares slope of one sample a minute, as a percentage of the samples' mean per ten
/// minutes; None for fewer than three samples.
fn trend_percent_per_10_minutes(samples: &[u64]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = samples.iter().sum::<u64>() as f64 / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &y) in samples.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y as f64 - mean_y);
        sxx += dx * dx;
    }
    Some(sxy / sxx * 10.0 / mean_y * 100.0)
}

/// Kills (SIGINT, then waits) what it holds when dropped, also on an early error.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn script(work: &Path, name: &str, delay_ms: u32) -> Result<String> {
    let path = work.join(name);
    std::fs::write(&path, format!("function delay()\n  return {delay_ms}\nend\n"))?;
    Ok(path.display().to_string())
}

/// Runs "$@" with the soft descriptor limit raised to the hard one: nginx and wrk each hold
/// 10,000 connections, and a default soft limit of 1,024 would cap them.
const RAISED_LIMIT_EXEC: &str = "ulimit -n \"$(ulimit -Hn)\" && exec \"$@\"";

/// wrk (its output is not needed: the agent's own counts are the figures).
fn wrk(args: &[&str]) -> Result<Child> {
    Command::new("sh")
        .args(["-c", RAISED_LIMIT_EXEC, "sh", "wrk"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("wrk (Debian package wrk)")
}

fn start_nginx(work: &Path) -> Result<Child> {
    let d = work.display();
    let conf = format!(
        "daemon off; user root; worker_processes 1; pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 30000; }}\n\
         http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;\n\
         client_body_temp_path {d}/body;\n\
         server {{ listen 127.0.0.1:{PORT} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
    );
    std::fs::write(work.join("nginx.conf"), conf)?;
    let child = Command::new("sh")
        .args(["-c", RAISED_LIMIT_EXEC, "sh", "nginx"])
        .args(["-c", &format!("{d}/nginx.conf"), "-p", &d.to_string()])
        .spawn()
        .context("nginx")?;
    wait_for_port(PORT, "nginx")?;
    Ok(child)
}

/// A `/proc/PID/status` figure in KiB: `VmRSS` (all), `RssAnon` (the heap and stacks),
/// `RssFile` (the binary, libraries and the mapped ring buffer).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The agent's /metrics, over plain HTTP/1.0.
fn scrape() -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).context("the agent's /metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The sum of every sample of a metric family (over its label sets).
fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::trend_percent_per_10_minutes as trend;

    #[test]
    fn trends_are_the_least_squares_slope_against_the_mean() {
        assert_eq!(trend(&[100, 100]), None);
        assert_eq!(trend(&[100, 100, 100, 100]), Some(0.0));
        // One per minute over a mean of 105: 10 per 10 minutes, 9.52%.
        let rising: Vec<u64> = (100..=110).collect();
        assert!((trend(&rising).unwrap() - 1000.0 / 105.0).abs() < 1e-9);
        // A swing up and back down is no trend.
        assert!(trend(&[100, 110, 100, 110, 100, 110, 100]).unwrap().abs() < 1e-9);
    }
}
