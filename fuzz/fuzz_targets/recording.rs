//! The recording file reader on any file: events, a truncated tail or an error, never a panic
//! or an allocation the file does not justify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::record::RecordReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = RecordReader::new(data) else { return };
    let mut n = 0;
    while let Ok(Some(_)) = reader.next_event() {
        n += 1;
        assert!(n <= data.len(), "more events than bytes");
    }
});
