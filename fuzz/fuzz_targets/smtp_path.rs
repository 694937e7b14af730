#![no_main]
use certrelay_core::address::parse_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_path(text);
});
