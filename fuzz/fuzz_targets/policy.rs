//! The boundary policy loader on any text: a policy or located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::boundary::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = Policy::parse("fuzz.yml", text) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert_eq!(e.file, "fuzz.yml");
            let _ = e.to_string();
        }
    }
});
