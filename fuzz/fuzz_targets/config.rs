//! The configuration loader on any text: a configuration or located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = Config::parse("fuzz.yml", text) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            let _ = e.to_string();
        }
    }
});
