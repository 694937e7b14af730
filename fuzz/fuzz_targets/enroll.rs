#![no_main]
//! What crosses the wire in pairing and renewal (core::enroll): codes and secrets as typed,
//! `XCERTRELAY` arguments, request lines (the server reads them from anyone inside TLS), and
//! a relay's answer as the laptop reads it: never a panic, and a request read back whole.
//!
//! Input: the first byte picks the parser, the rest is its input.
use certrelay_core::client::ReplyParser;
use certrelay_core::enroll::{
    parse_answer, parse_command, request_lines, Code, RequestReader, Secret, Step, MAX_REQUEST_DER,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(code) = Code::parse(&text) {
                assert_eq!(Code::parse(&code.to_string()), Ok(code));
            }
            let _ = Secret::parse(&text);
            let _ = parse_command(&text);
        }
        1 => {
            let mut reader = RequestReader::new();
            for line in rest.split(|&b| b == b'\n') {
                if let Step::Done(Ok(der)) = reader.line(line) {
                    // The one limit: nothing longer is ever read whole.
                    assert!(der.len() <= MAX_REQUEST_DER);
                    // What a well-behaved laptop sends reads back as it was.
                    let mut again = RequestReader::new();
                    let mut last = Step::More;
                    for l in request_lines(&der) {
                        last = again.line(l.as_bytes());
                    }
                    assert_eq!(last, Step::Done(Ok(der)));
                }
            }
        }
        _ => {
            let mut parser = ReplyParser::new();
            let mut input = rest;
            while !input.is_empty() {
                let (n, reply) = parser.push(input);
                if let Some(Ok(reply)) = reply {
                    let _ = parse_answer(&reply);
                }
                if n == 0 {
                    break;
                }
                input = &input[n..];
            }
        }
    }
});
