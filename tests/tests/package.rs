//! Install tier (root): the Debian package built by `cargo xtask package` (APIWATCH_DEB), installed
//! with dpkg on this machine, checked, run under the unit's user and capabilities, removed, purged.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use apiwatch_tests::*;

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("dpkg")
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_deb_installs_runs_least_privileged_removes_and_purges() {
    require_root();
    let deb =
        std::env::var("APIWATCH_DEB").expect("APIWATCH_DEB: run `cargo xtask test` (it builds the package)");
    // A leftover of an interrupted run must not hide what this one installs.
    let _ = dpkg(&["--purge", "apiwatch"]);

    let out = dpkg(&["-i", &deb]);
    assert!(out.status.success(), "dpkg -i: {out:?}");
    for f in [
        "/usr/bin/apiwatch",
        "/lib/systemd/system/apiwatch.service",
        "/etc/apiwatch/policy/example.yml",
        "/usr/share/apiwatch/dashboards/apiwatch-overview.json",
        "/usr/share/apiwatch/prometheus/apiwatch-rules.yml",
        "/usr/share/apiwatch/alertmanager/alertmanager.yml",
        "/usr/share/doc/apiwatch/install.md",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let uid = uid_of("apiwatch");
    let conf = std::fs::metadata("/etc/apiwatch/apiwatch.yml").unwrap();
    assert_eq!(conf.permissions().mode() & 0o777, 0o600);
    assert_eq!(conf.uid(), uid, "the configuration belongs to the service's user");
    for d in ["/var/lib/apiwatch", "/var/log/apiwatch"] {
        let m = std::fs::metadata(d).unwrap();
        assert_eq!((m.uid(), m.permissions().mode() & 0o777), (uid, 0o700), "{d}");
    }
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/apiwatch.conffiles").unwrap();
    assert!(conffiles.contains("/etc/apiwatch/apiwatch.yml"), "{conffiles}");

    let check = Command::new("/usr/bin/apiwatch")
        .args(["check", "--config", "/etc/apiwatch/apiwatch.yml"])
        .output()
        .unwrap();
    assert!(check.status.success(), "apiwatch check: {check:?}");

    // The installed binary as the unit runs it: its user, its capabilities, its configuration.
    let unit = std::fs::read_to_string("/lib/systemd/system/apiwatch.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/apiwatch run --config /etc/apiwatch/apiwatch.yml"));
    assert!(unit.contains("User=apiwatch"));
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap()
        .split_whitespace()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<String>();
    let nginx = Nginx::start(&[("pkg.json", b"{}")]);
    let port = free_port();
    let exchanges = "/var/lib/apiwatch/test-exchanges.jsonl";
    let agent = Proc(
        Command::new("setpriv")
            .args(["--reuid=apiwatch", "--regid=apiwatch", "--init-groups"])
            .arg(format!("--inh-caps=-all{caps}"))
            .arg(format!("--ambient-caps=-all{caps}"))
            .args([
                "/usr/bin/apiwatch",
                "run",
                "--config",
                "/etc/apiwatch/apiwatch.yml",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--exchanges", exchanges])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_ready(port);
    for _ in 0..3 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/pkg.json", nginx.port),
        ]);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(agent);
    let lines = std::fs::read_to_string(exchanges).unwrap();
    let seen = lines
        .lines()
        .filter(|l| l.contains("\"role\":\"server\"") && l.contains(&format!(":{}\"", nginx.port)))
        .count();
    assert_eq!(seen, 3, "{lines}");
    // It wrote its state where the unit lets it, as its own user.
    let written = std::fs::metadata(exchanges).unwrap();
    assert_eq!(written.uid(), uid);

    // Removal keeps configuration and state; purge removes them (the system user stays, as
    // Debian policy wants).
    let out = dpkg(&["--remove", "apiwatch"]);
    assert!(out.status.success(), "dpkg --remove: {out:?}");
    assert!(!Path::new("/usr/bin/apiwatch").exists());
    assert!(!Path::new("/lib/systemd/system/apiwatch.service").exists());
    assert!(Path::new("/etc/apiwatch/apiwatch.yml").exists());
    assert!(Path::new("/var/lib/apiwatch").exists());
    let out = dpkg(&["--purge", "apiwatch"]);
    assert!(out.status.success(), "dpkg --purge: {out:?}");
    for gone in [
        "/etc/apiwatch",
        "/var/lib/apiwatch",
        "/var/log/apiwatch",
        "/usr/share/apiwatch",
        "/usr/share/doc/apiwatch",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left behind after purge");
    }
    let status = dpkg(&["-s", "apiwatch"]);
    assert!(!status.status.success(), "still known to dpkg: {status:?}");
}
