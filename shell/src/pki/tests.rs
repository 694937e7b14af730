//! `fingerprint` against vectors that OpenSSL 3.0 printed for a certificate it made.

use super::*;
use crate::pki::names::check_file_name;
use std::fs;

use certrelay_testkit::fixtures::{
    VECTOR_OPENSSL_FINGERPRINTS as OPENSSL_SAYS,
    VECTOR_OPENSSL_PUBKEY_SHA256 as OPENSSL_PUBKEY_SHA256, VECTOR_PEM,
};

/// A test-only key (openssl genpkey), to show what a key file gives.
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQryP9REJKLuV9Nfg
OMrp+Q3IbpEiTYoJ5y6amGHBgy6hRANCAATbOavoRyzmzrFHbRfSQs/xJTMuVLyI
KTvHMkrfkHIfHp0jWuSYF73y9IR+WFfWOZhD+VBqchO3qKM6972xKM4J
-----END PRIVATE KEY-----
";

struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("certrelay-pki-fp-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn vector_der() -> Vec<u8> {
    parse_certificates(VECTOR_PEM.as_bytes()).unwrap()[0].to_vec()
}

#[test]
fn matches_openssl_for_every_digest_pem_and_der() {
    let dir = Scratch::new("vectors");
    let pem = dir.write("vector.pem", VECTOR_PEM.as_bytes());
    let der = dir.write("vector.der", &vector_der());
    for (digest, want) in OPENSSL_SAYS {
        for file in [&pem, &der] {
            let got = fingerprint(std::slice::from_ref(file), digest, false, None).unwrap();
            assert_eq!(got, want, "{digest} {}", file.display());
        }
    }
}

#[test]
fn public_key_fingerprint_is_labelled_and_matches_openssl() {
    let dir = Scratch::new("pubkey");
    let pem = dir.write("vector.pem", VECTOR_PEM.as_bytes());
    let got = fingerprint(&[pem], DigestKind::Sha256, true, None).unwrap();
    let want = format!(
        "sha256 Public Key Fingerprint={}\n",
        OPENSSL_PUBKEY_SHA256.to_ascii_uppercase()
    );
    assert_eq!(got, want);
}

#[test]
fn map_line_and_chains() {
    let dir = Scratch::new("chain");
    let chain = format!("{VECTOR_PEM}{KEY_PEM}{VECTOR_PEM}");
    let file = dir.write("chain.pem", chain.as_bytes());
    let got = fingerprint(
        std::slice::from_ref(&file),
        DigestKind::Md5,
        false,
        Some(" laptop "),
    )
    .unwrap();
    let line = "DA:E4:BC:B5:63:1D:C2:2F:B1:14:5A:0B:7A:52:EA:C6 laptop";
    let want = format!(
        "# {f}: certificate 1 of 2, CN=vector.test\n{line}\n\
         # {f}: certificate 2 of 2, CN=vector.test\n{line}\n",
        f = file.display()
    );
    assert_eq!(got, want);
    // The output is a valid table: comments and entries.
    let (table, notes) = certrelay_core::table::Table::parse("t", &got);
    assert_eq!(table.len(), 1, "{notes:?}");
    let bad = fingerprint(&[file], DigestKind::Md5, false, Some("a\nb")).unwrap_err();
    assert!(matches!(bad, PkiError::BadName { .. }), "{bad}");
}

#[test]
fn a_file_without_a_certificate_is_named_with_what_it_holds() {
    let dir = Scratch::new("errors");
    let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n";
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "laptop.key",
            KEY_PEM.as_bytes(),
            "a private key, not a certificate",
        ),
        (
            "laptop.csr",
            csr.as_bytes(),
            "a certificate request, not a certificate",
        ),
        ("empty.pem", b"", "empty file"),
        ("blank.pem", b"\n  \n", "empty file"),
        (
            "notes.txt",
            b"hello, world\n",
            "neither PEM text nor a DER certificate",
        ),
        (
            "other.pem",
            b"-----BEGIN FOO-----\nMAA=\n-----END FOO-----\n",
            "PEM text with no certificate",
        ),
    ];
    for (name, data, want) in cases {
        let path = dir.write(name, data);
        let err = fingerprint(std::slice::from_ref(&path), DigestKind::Sha256, false, None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let absent = dir.0.join("absent.pem");
    let err = fingerprint(&[absent], DigestKind::Sha256, false, None).unwrap_err();
    assert!(err.to_string().contains("cannot read") && err.to_string().contains("absent.pem"));
}

#[test]
fn names_for_files_are_checked() {
    for good in ["alice", "bob-laptop.example", "a_b@c"] {
        assert!(check_file_name(good).is_ok(), "{good}");
    }
    for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(check_file_name(bad).is_err(), "{bad:?}");
    }
}
