#![no_main]
use certrelay_core::client::ReplyParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (n, _reply) = parser.push(rest);
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
});
