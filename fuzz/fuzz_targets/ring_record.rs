//! The ring-record decoder on any bytes (what the kernel wrote, or garbage): an event or an
//! error, never a panic, and never more captured bytes than the record holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::capture::CaptureEvent;
use monitor::capture::event::Decoder;

fuzz_target!(|data: &[u8]| {
    if let Ok(CaptureEvent::Data(d)) = Decoder::new().decode(data) {
        assert!(d.bytes.len() <= data.len());
    }
});
