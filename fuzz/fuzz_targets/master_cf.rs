#![no_main]
use certrelay_core::config::{master_cf, server, Config};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// Building a configuration computes every parameter: once, not per input.
static MAIN_CF: LazyLock<Config> = LazyLock::new(|| Config::parse("main.cf", "").0);

fuzz_target!(|text: &str| {
    let (listeners, _) = master_cf::parse("master.cf", text);
    for l in &listeners {
        let _ = server::listener_settings(&MAIN_CF, l);
    }
});
