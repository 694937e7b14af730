#![no_main]
//! The PROXY protocol header parser: any bytes, cut anywhere. No panic; a header found lies
//! within the bytes and the limits; once an answer is given, more bytes never change it
//! (the shell relies on this when it reads the header piece by piece).
use certrelay_core::proxy::{parse, Parsed, V2_MAX_LEN};
use certrelay_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let bytes = input.payload;
    let whole = parse(bytes);
    if let Ok(Parsed::Complete(h)) = whole {
        assert!(h.len <= bytes.len() && h.len <= V2_MAX_LEN);
    }
    for &cut in input.cuts {
        let cut = usize::from(cut).min(bytes.len());
        match parse(&bytes[..cut]) {
            Ok(Parsed::Incomplete) => {}
            answer => assert_eq!(answer, whole, "cut {cut}"),
        }
    }
});
