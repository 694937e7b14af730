use super::*;
use alloc::string::String;
use alloc::vec::Vec;
use proptest::prelude::*;

fn sock(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn pair(source: &str, destination: &str) -> Addresses {
    Addresses {
        source: sock(source),
        destination: sock(destination),
    }
}

fn complete(bytes: &[u8]) -> Header {
    match parse(bytes) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn v1_tcp4_gives_the_client_and_leaves_what_follows() {
    let mut bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n".to_vec();
    let len = bytes.len();
    bytes.extend_from_slice(b"EHLO laptop\r\n");
    let h = complete(&bytes);
    assert_eq!(h.len, len);
    assert_eq!(h.version, 1);
    assert_eq!(
        h.addresses,
        Some(pair("192.0.2.7:40000", "198.51.100.1:25"))
    );
    assert_eq!(h.client(sock("127.0.0.1:9")), sock("192.0.2.7:40000"));
}

#[test]
fn v1_tcp6_and_unknown() {
    let h = complete(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n");
    assert_eq!(
        h.addresses,
        Some(pair("[2001:db8::7]:1", "[2001:db8::1]:65535"))
    );
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f:f:f:f:f:f:f ffff:f:f:f:f:f:f:f 65535 65535\r\n",
    ] {
        let h = complete(line);
        assert_eq!((h.len, h.addresses), (line.len(), None));
        assert_eq!(h.client(sock("127.0.0.1:9")), sock("127.0.0.1:9"));
    }
}

#[test]
fn v1_at_the_length_limit_reads_and_one_more_byte_does_not() {
    // 5 + 1 + 7 + 1 + 39 + 1 + 39 + 1 + 5 + 1 + 5 + 2 = 107 bytes.
    let longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                   ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), V1_MAX_LEN);
    assert_eq!(complete(longest.as_bytes()).len, V1_MAX_LEN);
    let over = longest.replacen("UNKNOWN", "UNKNOWN ", 1);
    assert_eq!(parse(over.as_bytes()), Err(ProxyError::V1TooLong));
    let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    assert_eq!(parse(&endless), Err(ProxyError::V1TooLong));
}

#[test]
fn v1_bad_lines_are_refused() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n",
            "line end (LF without CR)",
        ),
        (
            b"PROXY TCP5 192.0.2.7 198.51.100.1 40000 25\r\n",
            "protocol (TCP4, TCP6 or UNKNOWN)",
        ),
        (
            b"PROXY TCP4 2001:db8::7 198.51.100.1 40000 25\r\n",
            "source address",
        ),
        (
            b"PROXY TCP6 2001:db8::7 198.51.100.1 40000 25\r\n",
            "destination address",
        ),
        (
            b"PROXY TCP4 192.0.2.7  198.51.100.1 40000 25\r\n",
            "destination address",
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
            "source port",
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n",
            "source port",
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
            "destination port",
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25 1\r\n",
            "field count",
        ),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 2\xff\r\n", "byte"),
        (b"PROXY \r\n", "protocol (TCP4, TCP6 or UNKNOWN)"),
    ];
    for (bytes, what) in cases {
        assert_eq!(
            parse(bytes),
            Err(ProxyError::V1Syntax(what)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn smtp_tls_and_nothing_are_not_headers() {
    for bytes in [
        &b"EHLO laptop\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01",
        b"proxy TCP4",
        b"PROXY\r\n",
        b"\r\n\r\n\0\r\nQUIX\n",
    ] {
        assert_eq!(parse(bytes), Err(ProxyError::NotProxy), "{bytes:?}");
    }
    assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
    assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Incomplete));
}

#[test]
fn v2_proxy_local_and_tlvs() {
    let a = pair("192.0.2.7:40000", "198.51.100.1:25");
    let tlvs = [0x04, 0x00, 0x02, 0xab, 0xcd]; // a NOOP TLV, skipped
    let mut bytes = v2_header(Some(a), &tlvs).unwrap();
    assert_eq!(bytes.len(), 16 + 12 + 5);
    bytes.extend_from_slice(b"\x16\x03\x01"); // a ClientHello follows in wrapper mode
    let h = complete(&bytes);
    assert_eq!((h.len, h.version, h.addresses), (33, 2, Some(a)));

    let a6 = pair("[2001:db8::7]:40000", "[2001:db8::1]:465");
    assert_eq!(
        complete(&v2_header(Some(a6), &[]).unwrap()).addresses,
        Some(a6)
    );

    // HAProxy's health checks: LOCAL, the connection's own peer is the client.
    let local = v2_header(None, &[]).unwrap();
    let h = complete(&local);
    assert_eq!((h.len, h.addresses), (16, None));
    // LOCAL with an address block: the block is skipped, not read.
    let mut local_with_block = v2_header(Some(a), &[]).unwrap();
    local_with_block[12] = 0x20;
    assert_eq!(complete(&local_with_block).addresses, None);
}

#[test]
fn v2_unspec_and_unix_keep_the_peer() {
    let mut unspec = v2_header(None, &[]).unwrap();
    unspec[12] = 0x21;
    assert_eq!(complete(&unspec).addresses, None);
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
    unix.extend_from_slice(&[0u8; 216]);
    assert_eq!(complete(&unix).addresses, None);
}

#[test]
fn v2_bad_headers_are_refused_from_the_fixed_part() {
    let a = pair("192.0.2.7:40000", "198.51.100.1:25");
    let good = v2_header(Some(a), &[]).unwrap();
    let with = |at: usize, byte: u8| {
        let mut b = good[..16].to_vec();
        b[at] = byte;
        b
    };
    assert_eq!(parse(&with(12, 0x11)), Err(ProxyError::V2Version(1)));
    assert_eq!(parse(&with(12, 0x22)), Err(ProxyError::V2Command(2)));
    assert_eq!(parse(&with(13, 0x12)), Err(ProxyError::V2Family(0x12)));
    assert_eq!(parse(&with(13, 0x41)), Err(ProxyError::V2Family(0x41)));
    // Shorter than two IPv4 addresses and ports, or an IPv4 block called IPv6.
    assert_eq!(parse(&with(15, 11)), Err(ProxyError::V2Length(11)));
    assert_eq!(parse(&with(13, 0x21)), Err(ProxyError::V2Length(12)));
    // Oversize: refused before a byte of the body is awaited.
    let mut huge = good[..16].to_vec();
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&huge), Err(ProxyError::V2Length(65535)));
    let limit = V2_MAX_LEN - 16;
    let at_limit = v2_header(Some(a), &vec_of(limit - 12)).unwrap();
    assert_eq!(complete(&at_limit).len, V2_MAX_LEN);
    assert_eq!(v2_header(Some(a), &vec_of(limit - 11)), None);
    let mut over = at_limit[..16].to_vec();
    over[14..16].copy_from_slice(&u16::try_from(limit + 1).unwrap().to_be_bytes());
    assert_eq!(parse(&over), Err(ProxyError::V2Length(limit + 1)));
}

fn vec_of(n: usize) -> Vec<u8> {
    alloc::vec![0u8; n]
}

fn addresses() -> impl Strategy<Value = Option<Addresses>> {
    let v4 = (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(s, d, sp, dp)| Addresses {
            source: SocketAddr::new(IpAddr::from(s), sp),
            destination: SocketAddr::new(IpAddr::from(d), dp),
        });
    let v6 = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(s, d, sp, dp)| Addresses {
            source: SocketAddr::new(IpAddr::from(s), sp),
            destination: SocketAddr::new(IpAddr::from(d), dp),
        });
    prop_oneof![Just(None), v4.prop_map(Some), v6.prop_map(Some)]
}

proptest! {
    /// Every header of either version: each strict prefix asks for more, the whole reads
    /// back its addresses and length, whatever follows it.
    #[test]
    fn headers_read_back_at_every_cut(
        a in addresses(),
        v2 in any::<bool>(),
        tlvs in proptest::collection::vec(any::<u8>(), 0..64),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = if v2 {
            v2_header(a, &tlvs).unwrap()
        } else {
            v1_header(a).into_bytes()
        };
        let limit = if v2 { V2_MAX_LEN } else { V1_MAX_LEN };
        prop_assert!(header.len() <= limit);
        for cut in 0..header.len() {
            prop_assert_eq!(parse(&header[..cut]), Ok(Parsed::Incomplete), "cut {}", cut);
        }
        let whole = [header.as_slice(), &after].concat();
        let h = match parse(&whole) {
            Ok(Parsed::Complete(h)) => h,
            other => return Err(TestCaseError::fail(alloc::format!("{other:?}"))),
        };
        prop_assert_eq!(h.len, header.len());
        prop_assert_eq!(h.version, if v2 { 2 } else { 1 });
        prop_assert_eq!(h.addresses, a);
    }

    /// Any bytes: no panic; a header found lies within the bytes and the limits, and
    /// reading more never changes an answer already given.
    #[test]
    fn garbage_never_panics_and_answers_are_stable(
        head in prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let bytes = [head.as_slice(), &tail].concat();
        let mut settled: Option<Result<Parsed, ProxyError>> = None;
        for cut in 0..=bytes.len() {
            let answer = parse(&bytes[..cut]);
            if let Ok(Parsed::Complete(h)) = answer {
                prop_assert!(h.len <= cut && h.len <= V2_MAX_LEN);
            }
            if let Some(before) = settled {
                prop_assert_eq!(answer, before, "cut {}", cut);
            } else if answer != Ok(Parsed::Incomplete) {
                settled = Some(answer);
            }
        }
    }
}
