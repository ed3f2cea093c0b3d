use which::which;

/// Building this crate needs bpf-linker; say so plainly instead of failing deep inside rustc.
fn main() {
    if which("bpf-linker").is_err() {
        panic!("bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker against llvm-22)");
    }
    println!("cargo:rerun-if-env-changed=PATH");
}
