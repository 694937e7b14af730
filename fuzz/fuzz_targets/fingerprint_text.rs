#![no_main]
use certrelay_core::fingerprint::Fingerprint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(fp) = text.parse::<Fingerprint>() {
            // The printed form parses back to the same fingerprint.
            assert_eq!(fp.to_string().parse::<Fingerprint>().ok(), Some(fp));
        }
    }
});
