use super::*;
use crate::message::HeaderSection;
use alloc::string::ToString;
use alloc::vec;

/// RFC 6376 3.4.6's example, `<SP>` and the like written out.
const RFC6376_HEADER: &[u8] = b"A: X\r\nB : Y\t\r\n\tZ  \r\n";
const RFC6376_BODY: &[u8] = b" C \r\nD \t E\r\n\r\n\r\n";

fn body_canon(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut canon = RelaxedBody::default();
    canon.feed(body, &mut out);
    canon.finish(&mut out);
    out
}

#[test]
fn rfc6376_relaxed_header_example() {
    let header = HeaderSection::parse(RFC6376_HEADER);
    let mut out = Vec::new();
    for f in header.fields() {
        relaxed_header(f.as_bytes(), &mut out);
    }
    assert_eq!(out, b"a:X\r\nb:Y Z\r\n");
}

#[test]
fn rfc6376_relaxed_body_example() {
    assert_eq!(body_canon(RFC6376_BODY), b" C\r\nD E\r\n");
}

#[test]
fn body_edge_cases() {
    assert_eq!(body_canon(b""), b"");
    assert_eq!(body_canon(b"\r\n\r\n  \r\n"), b"");
    assert_eq!(body_canon(b"last line"), b"last line\r\n");
    assert_eq!(body_canon(b"a\r\n \t\r\nb\r\n"), b"a\r\n\r\nb\r\n");
    // A CR of its own is text, and so is one at the very end.
    assert_eq!(body_canon(b"a\rb\r\nc\r"), b"a\rb\r\nc\r\r\n");
}

#[test]
fn the_body_hash_does_not_depend_on_how_the_message_is_cut() {
    let message = b"From: a@example.org\r\nSubject: x\r\n\r\nline  one \r\n\r\nline\ttwo\r\n\r\n";
    let whole = {
        let mut h = MessageHasher::new();
        h.update(message);
        h.finish().unwrap()
    };
    for cut in 1..message.len() {
        let mut h = MessageHasher::new();
        for chunk in message.chunks(cut) {
            h.update(chunk);
        }
        let hashed = h.finish().unwrap();
        assert_eq!(hashed.body_hash(), whole.body_hash(), "chunks of {cut}");
        assert_eq!(hashed.signed_names(), whole.signed_names());
    }
    let expected: [u8; 32] = Sha256::digest(b"line one\r\n\r\nline two\r\n").into();
    assert_eq!(whole.body_hash(), expected);
}

/// RFC 8463 appendix A: the message of RFC 6376 appendix A, signed with RFC 8032's test key.
const RFC8463_MESSAGE: &[u8] = b"From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie Q <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\
\r\n\
Hi.\r\n\
\r\n\
We lost the game.  Are you hungry yet?\r\n\
\r\n\
Joe.\r\n";
const RFC8463_FIELD_UNSIGNED: &[u8] =
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
d=football.example.com; i=@football.example.com;\r\n \
q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
subject : date : message-id : from : subject : date;\r\n \
bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n \
b=\r\n";
const RFC8463_B: &str =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
const RFC8032_SEED: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

#[test]
fn rfc8463_ed25519_example_is_reproduced_exactly() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let mut h = MessageHasher::new();
    h.update(RFC8463_MESSAGE);
    let hashed = h.finish().unwrap();
    assert_eq!(
        base64(&hashed.body_hash()),
        "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    );
    assert_eq!(hashed.from_domain(), "football.example.com");
    let names = [
        "from",
        " to ",
        " subject ",
        " date ",
        " message-id ",
        " from ",
        " subject ",
        " date",
    ];
    let data = signed_data(&hashed.header, &names, RFC8463_FIELD_UNSIGNED);
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let key = Ed25519KeyPair::from_seed_unchecked(&RFC8032_SEED).unwrap();
    assert_eq!(
        base64(key.public_key().as_ref()),
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    );
    // Ed25519 is deterministic: the same key over the same octets gives the RFC's value.
    assert_eq!(base64(key.sign(&digest).as_ref()), RFC8463_B);
}

fn hashed(message: &[u8]) -> Hashed {
    let mut h = MessageHasher::new();
    h.update(message);
    h.finish().unwrap()
}

const TAGS: Tags<'static> = Tags {
    algorithm: Algorithm::Ed25519Sha256,
    domain: "example.org",
    selector: "mail",
    timestamp: 1_700_000_000,
};

#[test]
fn from_and_subject_are_oversigned_and_absent_fields_not_listed() {
    let h = hashed(
        b"Received: x\r\nFrom: A <a@Example.ORG>\r\nTo: b@example.net\r\nTo: c@example.net\r\n\
          Subject: s\r\nX-Other: y\r\n\r\nbody\r\n",
    );
    assert_eq!(h.from_domain(), "example.org");
    assert_eq!(
        h.signed_names(),
        ["from", "from", "to", "to", "subject", "subject"]
    );
    let h = hashed(b"From: a@example.org\r\n\r\n");
    assert_eq!(h.signed_names(), ["from", "from", "subject"]);
}

#[test]
fn the_signature_field_is_folded_and_covers_what_a_verifier_recomputes() {
    use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
    let message =
        b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nCc: c@example.net\r\n\
        Subject: hello\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain\r\nReply-To: r@example.org\r\n\
        In-Reply-To: <0@example.org>\r\nReferences: <0@example.org>\r\n\
        Content-Transfer-Encoding: 7bit\r\n\r\nHello  Bob. \r\n\r\n";
    let h = hashed(message);
    let unsigned = h.prepare(&TAGS);
    let key = Ed25519KeyPair::from_seed_unchecked(&RFC8032_SEED).unwrap();
    let signature = key.sign(&unsigned.digest());
    let field = unsigned.complete(signature.as_ref());
    assert!(field.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;"));
    assert!(field.ends_with("\r\n"));
    for line in field.trim_end().split("\r\n") {
        assert!(line.len() <= 78, "{line:?} in {field}");
    }
    // Read the field back as a verifier does: tags, the b= value taken out.
    let unfolded: String = field.replace("\r\n", "");
    let tags: Vec<(&str, String)> = unfolded["DKIM-Signature:".len()..]
        .split(';')
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap();
            (k.trim(), v.split_whitespace().collect::<String>())
        })
        .collect();
    let tag = |name: &str| tags.iter().find(|(k, _)| *k == name).unwrap().1.clone();
    assert_eq!(tag("d"), "example.org");
    assert_eq!(tag("s"), "mail");
    assert_eq!(tag("t"), "1700000000");
    assert_eq!(
        tag("h"),
        "from:from:to:cc:subject:subject:date:message-id:reply-to:in-reply-to:references:\
         mime-version:content-type:content-transfer-encoding"
    );
    let expected_bh: [u8; 32] = Sha256::digest(b"Hello Bob.\r\n").into();
    assert_eq!(tag("bh"), base64(&expected_bh));
    assert_eq!(tag("b"), base64(signature.as_ref()));
    let b_at = field
        .find("b=")
        .map(|_| field.rfind("; b=").unwrap() + 4)
        .unwrap();
    let without_b = alloc::format!("{}\r\n", &field[..b_at]);
    let names: Vec<&str> = tag("h").leak().split(':').collect();
    let data = signed_data(&h.header, &names, without_b.as_bytes());
    let digest: [u8; 32] = Sha256::digest(&data).into();
    UnparsedPublicKey::new(&ED25519, key.public_key().as_ref())
        .verify(&digest, signature.as_ref())
        .unwrap();
    // A changed subject no longer verifies.
    let forged = hashed(&[message.as_slice(), b""].concat().replace_subject());
    let data = signed_data(&forged.header, &names, without_b.as_bytes());
    let digest: [u8; 32] = Sha256::digest(&data).into();
    assert!(UnparsedPublicKey::new(&ED25519, key.public_key().as_ref())
        .verify(&digest, signature.as_ref())
        .is_err());
}

trait ReplaceSubject {
    fn replace_subject(self) -> Vec<u8>;
}

impl ReplaceSubject for Vec<u8> {
    fn replace_subject(self) -> Vec<u8> {
        let text = String::from_utf8(self).unwrap();
        text.replace("Subject: hello", "Subject: hellO")
            .into_bytes()
    }
}

#[test]
fn the_from_domain_is_the_one_address_of_the_one_from_field() {
    let domain = |header: &str| from_domain(&HeaderSection::parse(header.as_bytes()));
    assert_eq!(
        domain("From: \"Doe, J\" <j@Mail.Example.org>\r\n").unwrap(),
        "mail.example.org"
    );
    assert_eq!(
        domain("From: j@example.org (J)\r\n").unwrap(),
        "example.org"
    );
    assert_eq!(domain("To: x@example.org\r\n"), Err(SignError::NoFrom));
    assert_eq!(
        domain("From: a@example.org\r\nFrom: b@example.net\r\n"),
        Err(SignError::SeveralFrom)
    );
    assert_eq!(
        domain("From: a@example.org, b@example.net\r\n"),
        Err(SignError::FromNotOneAddress)
    );
    assert_eq!(domain("From: \r\n"), Err(SignError::FromNotOneAddress));
    assert_eq!(domain("From: alice\r\n"), Err(SignError::FromWithoutDomain));
}

#[test]
fn a_bound_certificate_signs_only_from_addresses_it_owns() {
    let (senders, d) = crate::table::Table::parse(
        "senders",
        "alice alice@example.net, @alice.example\nbob bob@example.net\n",
    );
    assert!(d.is_empty(), "{d:?}");
    let tables = vec![senders];
    let check = |label: &str, header: &str| {
        check_from_owner(&HeaderSection::parse(header.as_bytes()), &tables, label)
    };
    for from in [
        "From: alice@example.net\r\n",
        "From: Alice <ALICE@Example.NET>\r\n",
        "From: \"Alice\" <alice@example.net.> (laptop)\r\n",
        "From: news@alice.example\r\n",
    ] {
        assert_eq!(check("alice", from), Ok(()), "{from}");
    }
    let not_owned = |label: &str, address: &str| SignError::FromNotOwned {
        address: address.to_string(),
        label: label.to_string(),
    };
    // The forgery: an owned envelope sender does not make another From: owned.
    assert_eq!(
        check("alice", "From: CEO <ceo@example.net>\r\n"),
        Err(not_owned("alice", "ceo@example.net"))
    );
    assert_eq!(
        check("alice", "From: ceo@example.net\r\n")
            .unwrap_err()
            .to_string(),
        "From: <ceo@example.net> is not owned by certificate alice"
    );
    // Another label's address, a subdomain, a label without an entry, an address that is
    // not local@domain.
    assert_eq!(
        check("alice", "From: bob@example.net\r\n"),
        Err(not_owned("alice", "bob@example.net"))
    );
    assert_eq!(
        check("alice", "From: x@mail.alice.example\r\n"),
        Err(not_owned("alice", "x@mail.alice.example"))
    );
    assert_eq!(
        check("carol", "From: alice@example.net\r\n"),
        Err(not_owned("carol", "alice@example.net"))
    );
    assert_eq!(
        check("alice", "From: alice\r\n"),
        Err(not_owned("alice", "alice"))
    );
    assert_eq!(check("bob", "From: bob@example.net\r\n"), Ok(()));
    // A From: that could never be signed says so, as before.
    assert_eq!(
        check("alice", "From: alice@example.net, ceo@example.net\r\n"),
        Err(SignError::FromNotOneAddress)
    );
    assert_eq!(
        check(
            "alice",
            "From: alice@example.net\r\nFrom: ceo@example.net\r\n"
        ),
        Err(SignError::SeveralFrom)
    );
    assert_eq!(
        check("alice", "To: x@example.org\r\n"),
        Err(SignError::NoFrom)
    );
}

#[test]
fn messages_that_cannot_be_signed_say_why() {
    let fail = |m: &[u8]| {
        let mut h = MessageHasher::new();
        h.update(m);
        h.finish().unwrap_err()
    };
    assert_eq!(
        fail(b"From: a@example.org\r\nnot a header\r\n\r\n"),
        SignError::NoSeparator
    );
    let mut big = b"From: a@example.org\r\nX: ".to_vec();
    big.extend(core::iter::repeat_n(b'a', HEADER_LIMIT));
    big.extend_from_slice(b"\r\n\r\nbody\r\n");
    let mut h = MessageHasher::new();
    h.update(&big[..HEADER_LIMIT + 10]);
    assert_eq!(h.failure(), Some(&SignError::HeaderTooLarge));
    assert_eq!(fail(&big), SignError::HeaderTooLarge);
    // A message that is all header is signed with an empty body.
    let h = hashed(b"From: a@example.org\r\nSubject: x\r\n");
    let empty: [u8; 32] = Sha256::digest(b"").into();
    assert_eq!(h.body_hash(), empty);
}

#[test]
fn base64_matches_rfc4648() {
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), output);
    }
}

#[test]
fn the_dns_record_is_cut_into_strings_of_255() {
    let key = vec![7u8; 294]; // the size of a 2048-bit RSA SubjectPublicKeyInfo
    let record = dns_record("mail", "example.org", Algorithm::RsaSha256, &key);
    let (name, strings) = record.split_once(" IN TXT ").unwrap();
    assert_eq!(name, "mail._domainkey.example.org.");
    let parts: Vec<&str> = strings.split("\" \"").collect();
    assert_eq!(parts.len(), 2, "{record}");
    let parts: Vec<&str> = parts.iter().map(|p| p.trim_matches('"')).collect();
    assert_eq!(parts[0].len(), 255);
    let joined: String = parts.concat();
    assert_eq!(joined, alloc::format!("v=DKIM1; k=rsa; p={}", base64(&key)));
    let ed = dns_record("s", "example.org", Algorithm::Ed25519Sha256, &[1; 32]);
    assert_eq!(
        ed,
        alloc::format!(
            "s._domainkey.example.org. IN TXT \"v=DKIM1; k=ed25519; p={}\"",
            base64(&[1; 32])
        )
    );
}

#[test]
fn key_lines() {
    assert_eq!(
        KeyLine::parse("Example.ORG.", "Mail /etc/k.pem"),
        Ok(KeyLine {
            domain: "example.org".to_string(),
            selector: "mail".to_string(),
            key_file: "/etc/k.pem".to_string(),
        })
    );
    assert_eq!(
        KeyLine::parse("example.org", "mail"),
        Err(KeyLineError::Shape)
    );
    assert_eq!(
        KeyLine::parse("example.org", "mail /k extra"),
        Err(KeyLineError::Shape)
    );
    assert_eq!(
        KeyLine::parse("exa mple", "mail /k"),
        Err(KeyLineError::BadDomain("exa mple".to_string()))
    );
    assert_eq!(
        KeyLine::parse("example.org", "ma;il /k"),
        Err(KeyLineError::BadSelector("ma;il".to_string()))
    );
    assert_eq!(
        KeyLine::parse("example.org", "mail k.pem"),
        Err(KeyLineError::RelativePath("k.pem".to_string()))
    );
}
