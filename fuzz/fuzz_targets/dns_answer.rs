#![no_main]
use certrelay_core::dns::{Query, QueryType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for qtype in [QueryType::Mx, QueryType::A, QueryType::Aaaa] {
        let query = Query::new(0x1234, "example.org", qtype).expect("valid name");
        let _ = query.handle_answer(data);
    }
});
