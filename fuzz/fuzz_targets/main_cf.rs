#![no_main]
use certrelay_core::config::{client, server, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let (config, _) = Config::parse("main.cf", text);
    let _ = server::server_settings(&config);
    let _ = client::client_settings(&config);
});
