use anyhow::{Context as _, anyhow};

/// Builds the eBPF programs (monitor-ebpf) with nightly and embeds them in the agent.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("monitor has no parent directory"))?
        .join("monitor-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (monitor-ebpf) failed, see the messages above; if rust-src or bpf-linker is missing, run `cargo xtask setup`")
}
