//! `fingerprint` against vectors that OpenSSL 3.0 printed for a certificate it made.

use super::*;
use std::fs;

/// Made by `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=vector.test`.
const VECTOR_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASegAwIBAgIUblgQAShRXxC8+KBMv/CakCL/MTcwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLdmVjdG9yLnRlc3QwHhcNMjYxMTI5MDUxMzU0WhcNMzYxMTI2
MDUxMzU0WjAWMRQwEgYDVQQDDAt2ZWN0b3IudGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABEbvMcqJ2sOiyrsHEwA4e8enVOf/zb60gGOw1VY6lGhQvypFHMfY
PiNuenjJKDWwx00lr/ZbDlpl1Hg8PkNo5eSjUzBRMB0GA1UdDgQWBBRF5I7TPn0R
GiHs53HcYY2cteYG9zAfBgNVHSMEGDAWgBRF5I7TPn0RGiHs53HcYY2cteYG9zAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDZ9Ht+VPuTGBYUEhoz
KIBm8GZb6ZdPqfLM7UWzIPsajwIhAIlDOmqa2mkvGDiiD7eioM6jMMum8T/Z3+G0
HVcwSjeN
-----END CERTIFICATE-----
";

/// `openssl x509 -noout -fingerprint -<digest> -in vector.pem`, for each digest.
const OPENSSL_SAYS: [(DigestKind, &str); 4] = [
    (
        DigestKind::Md5,
        "md5 Fingerprint=DA:E4:BC:B5:63:1D:C2:2F:B1:14:5A:0B:7A:52:EA:C6\n",
    ),
    (
        DigestKind::Sha1,
        "sha1 Fingerprint=FE:76:BF:61:9C:55:95:15:D7:C0:58:C2:25:C7:E4:75:D0:C8:EB:B1\n",
    ),
    (
        DigestKind::Sha256,
        "sha256 Fingerprint=65:9E:CC:74:1F:93:11:E5:91:86:49:E6:EF:92:0C:43:78:06:3C:A7:49:74:57:\
         61:7D:E4:E5:96:F0:7F:F0:74\n",
    ),
    (
        DigestKind::Sha512,
        "sha512 Fingerprint=61:5D:56:27:5E:72:CF:78:17:88:5D:59:CD:77:15:6A:C2:04:A1:3A:AF:16:1F:\
         FA:BF:8C:E3:08:AC:12:EE:3B:F4:7E:F8:21:00:62:13:08:38:07:EA:E5:CE:88:24:61:BD:EE:C1:DC:\
         2F:5C:8C:C1:53:E4:57:DE:7F:51:2A:3B\n",
    ),
];

/// `openssl x509 -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -c`.
const OPENSSL_PUBKEY_SHA256: &str = "fc:78:d4:64:a0:2b:8b:e2:5a:f6:9e:2c:18:c0:ad:50:0e:61:8f:\
                                     f4:61:0e:23:2f:af:fe:8b:42:ae:27:40:7e";

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
