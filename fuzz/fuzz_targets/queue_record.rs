#![no_main]
use certrelay_core::queue::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        // Whatever parses must survive a round trip unchanged.
        let again = Envelope::parse(env.to_text().as_bytes()).expect("round trip");
        assert_eq!(env, again);
    }
});
