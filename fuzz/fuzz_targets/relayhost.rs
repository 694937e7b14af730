#![no_main]
use certrelay_core::nexthop::parse_relayhost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = parse_relayhost(text);
});
