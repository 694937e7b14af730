#![no_main]
use certrelay_core::fingerprint::FingerprintMap;
use certrelay_core::table::Table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let (table, _) = Table::parse("relay_clientcerts", text);
    let entries: Vec<_> = table
        .entries()
        .map(|e| (e.key.clone(), e.value.clone(), e.line as usize))
        .collect();
    let _ = FingerprintMap::from_table("relay_clientcerts", entries);
});
