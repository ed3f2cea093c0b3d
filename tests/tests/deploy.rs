//! Deployment files: the Kubernetes manifests validate against the Kubernetes schemas
//! (kubernetes-validate, from PyPI, installed by `cargo xtask setup`), the configuration and
//! policy in the ConfigMap pass `apiwatch check`, and the pieces agree with each other and with
//! the systemd unit (capabilities, labels, ports, the kustomization's list).
use std::path::PathBuf;
use std::process::Command;

use apiwatch_tests::*;

fn k8s_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

fn manifest(name: &str) -> serde_norway::Value {
    serde_norway::from_str(&std::fs::read_to_string(k8s_dir().join(name)).unwrap()).unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_and_agree() {
    let mut files: Vec<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    // Every manifest is applied by the kustomization.
    let kustomization = manifest("kustomization.yaml");
    let mut listed: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, files);
    // The built-in kinds against the Kubernetes schemas, strictly (unknown fields refused). The
    // PodMonitor is the Prometheus Operator's custom resource: checked against the DaemonSet below.
    let builtin: Vec<PathBuf> = files
        .iter()
        .filter(|f| *f != "podmonitor.yaml")
        .map(|f| k8s_dir().join(f))
        .collect();
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&builtin)
        .output()
        .expect("python3 -m kubernetes_validate (cargo xtask setup installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        builtin.len(),
        "{report}"
    );

    let ds = manifest("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(container["securityContext"]["privileged"].as_bool(), Some(false));
    // Exactly the unit's capabilities.
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/apiwatch.service")).unwrap();
    let mut unit_caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let mut caps: Vec<String> = container["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    unit_caps.sort();
    caps.sort();
    assert_eq!(caps, unit_caps);
    // The PodMonitor selects these pods, on a port they have.
    let pm = manifest("podmonitor.yaml");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&labels[k.as_str().unwrap()], v, "PodMonitor selector {k:?}");
    }
    let port = pm["spec"]["podMetricsEndpoints"][0]["port"].as_str().unwrap();
    assert!(
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str() == Some(port)),
        "no container port {port}"
    );
    // The ConfigMap's configuration names the mounted secret; its port is the container's.
    let cm = manifest("configmap.yaml");
    let config = cm["data"]["apiwatch.yml"].as_str().unwrap();
    let secret = manifest("secret.yaml");
    for key in secret["stringData"].as_mapping().unwrap().keys() {
        let path = format!("file:/etc/apiwatch/secrets/{}", key.as_str().unwrap());
        assert!(config.contains(&path), "{path} not used by the configuration");
    }
    assert!(config.contains(&format!(
        ":{}\"",
        container["ports"][0]["containerPort"].as_u64().unwrap()
    )));

    // `apiwatch check` on the ConfigMap's files (the secret's mount point made a temporary
    // directory holding its keys).
    let dir = TempDir::new("deploy");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for (k, v) in secret["stringData"].as_mapping().unwrap() {
        std::fs::write(secrets.join(k.as_str().unwrap()), v.as_str().unwrap()).unwrap();
    }
    let config = config.replace("/etc/apiwatch/secrets", secrets.to_str().unwrap());
    std::fs::write(dir.path().join("apiwatch.yml"), config).unwrap();
    std::fs::write(
        dir.path().join("policy.yml"),
        cm["data"]["policy.yml"].as_str().unwrap(),
    )
    .unwrap();
    let check = Command::new(apiwatch_bin())
        .args([
            "check",
            "--config",
            dir.path().join("apiwatch.yml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let ok = String::from_utf8_lossy(&check.stdout);
    assert!(
        ok.contains("apiwatch.yml: ok") && ok.contains("policy.yml: ok"),
        "{ok}"
    );
}
