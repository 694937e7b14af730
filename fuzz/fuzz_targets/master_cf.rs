#![no_main]
use certrelay_core::config::{master_cf, server, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let (config, _) = Config::parse("main.cf", "");
    let (listeners, _) = master_cf::parse("master.cf", text);
    for l in &listeners {
        let _ = server::listener_settings(&config, l);
    }
});
