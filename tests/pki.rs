//! Certificates without openssl: the `pki` commands' files, checked by the relay's own trust
//! and table code, and their fingerprints checked against the `openssl` binary.

use certrelay_core::cert::{
    judge_client_cert, parse_certificates, parse_private_key, spki_der, trust_anchors,
    verify_server_chain,
};
use certrelay_core::facts::{CertVerdict, ClientCert};
use certrelay_core::fingerprint::CertMatch;
use certrelay_core::fingerprint::{DigestKind, Fingerprint, FingerprintMap};
use certrelay_core::table::Table;
use certrelay_shell::pki::{self, PkiError};
use certrelay_testkit::fixtures::{VECTOR_OPENSSL_FINGERPRINTS, VECTOR_PEM};
use certrelay_testkit::TempDir;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIGESTS: [DigestKind; 4] = [
    DigestKind::Md5,
    DigestKind::Sha1,
    DigestKind::Sha256,
    DigestKind::Sha512,
];

fn algs() -> Vec<&'static dyn SignatureVerificationAlgorithm> {
    // The relay's own provider: rustls's ring provider.
    certrelay_shell::tls::provider()
        .signature_verification_algorithms
        .all
        .to_vec()
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    parse_certificates(&std::fs::read(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The relay's map, read from the table file the way the relay reads it (none: empty).
fn map_of(path: &Path) -> FingerprintMap {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (table, notes) = Table::parse("relay_clientcerts", &text);
    assert!(notes.is_empty(), "{notes:?}");
    let rows: Vec<(String, String, usize)> = table
        .entries()
        .map(|e| (e.key.clone(), e.value.clone(), e.line as usize))
        .collect();
    FingerprintMap::from_table("relay_clientcerts", rows).0
}

/// What the relay concludes about a client presenting `chain`.
fn judge(chain: &[CertificateDer<'_>], ca_file: &Path, map: &Path) -> ClientCert {
    let anchors = trust_anchors(&certs(ca_file)).unwrap();
    judge_client_cert(chain, &anchors, 1, &map_of(map), UnixTime::now(), &algs())
}

fn listed(label: &str, public_key: bool) -> Option<CertMatch> {
    Some(CertMatch {
        label: label.to_string(),
        digest: DigestKind::Sha256,
        public_key,
    })
}

/// Runs openssl, or says plainly that it is not there (the caller then checks less).
fn openssl(args: &[&str]) -> Option<String> {
    match Command::new("openssl").args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).unwrap())
        }
        Err(err) => {
            eprintln!("SKIPPED part of this test: cannot run openssl ({err})");
            None
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn fingerprints_equal_what_openssl_printed_for_a_fixed_certificate() {
    let dir = TempDir::new("pki-vector");
    let file = dir.write("vector.pem", VECTOR_PEM);
    for (digest, want) in VECTOR_OPENSSL_FINGERPRINTS {
        let got = pki::fingerprint(std::slice::from_ref(&file), digest, false, None).unwrap();
        assert_eq!(got, want, "{digest}");
    }
}

/// Every certificate of `file` fingerprinted by us and by openssl, for every digest; openssl
/// prints only the first certificate of a file, so each is split out first.
fn compare_with_openssl(dir: &TempDir, file: &Path) -> bool {
    for (index, der) in certs(file).iter().enumerate() {
        let single = dir.path().join(format!("single-{index}.der"));
        std::fs::write(&single, der.as_ref()).unwrap();
        for digest in DIGESTS {
            let flag = format!("-{}", digest.config_name());
            let Some(want) = openssl(&[
                "x509",
                "-noout",
                "-fingerprint",
                &flag,
                "-inform",
                "der",
                "-in",
                path_str(&single),
            ]) else {
                return false;
            };
            let ours =
                pki::fingerprint(std::slice::from_ref(&single), digest, false, None).unwrap();
            assert_eq!(
                ours,
                want,
                "{} certificate {index} {digest}",
                file.display()
            );
        }
        let pipe = format!(
            "openssl x509 -inform der -in '{}' -noout -pubkey \
             | openssl pkey -pubin -outform der | openssl dgst -sha256 -c",
            single.display()
        );
        let out = Command::new("sh").args(["-c", &pipe]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.rsplit(' ').next().unwrap().trim().to_ascii_uppercase();
        let ours = pki::fingerprint(&[single], DigestKind::Sha256, true, None).unwrap();
        assert_eq!(ours, format!("sha256 Public Key Fingerprint={hex}\n"));
    }
    // The whole file at once: openssl's line for its first certificate comes first.
    let first = openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-in",
        path_str(file),
    ]);
    let ours = pki::fingerprint(&[file.to_path_buf()], DigestKind::Sha256, false, None).unwrap();
    assert!(ours.contains(&first.unwrap()), "{ours}");
    true
}

#[test]
fn fingerprints_equal_the_openssl_binary_for_openssl_and_rcgen_certificates() {
    let dir = TempDir::new("pki-openssl");
    let ec = dir.path().join("ec.pem");
    let rsa = dir.path().join("rsa.pem");
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&dir.path().join("ec.key")),
        "-out",
        path_str(&ec),
        "-subj",
        "/CN=ec.test",
        "-days",
        "30",
    ]);
    if made.is_none() {
        return;
    }
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path_str(&dir.path().join("rsa.key")),
        "-out",
        path_str(&rsa),
        "-subj",
        "/CN=rsa.test/O=Example",
        "-days",
        "30",
    ]);
    assert!(compare_with_openssl(&dir, &ec));
    assert!(compare_with_openssl(&dir, &rsa));
    let vector = dir.write("vector.pem", VECTOR_PEM);
    assert!(compare_with_openssl(&dir, &vector));
    // rcgen's certificates, a chain of two.
    let files = pki::ca_init(&dir.path().join("ca"), "relay.test", &[]).unwrap();
    assert!(compare_with_openssl(&dir, &files.relay_cert));
}

#[test]
fn ca_init_and_issue_give_a_trusted_listed_laptop_and_a_valid_relay_certificate() {
    let dir = TempDir::new("pki-ca");
    let ca_dir = dir.path().join("ca");
    let names = ["mail.relay.test".to_string(), "192.0.2.7".to_string()];
    let files = pki::ca_init(&ca_dir, "relay.test", &names).unwrap();
    assert_eq!(mode(&files.ca_key), 0o600);
    assert_eq!(mode(&files.relay_key), 0o600);
    assert!(files.ca_cert.is_absolute());
    let lines = files.main_cf_lines();
    for want in [
        format!("smtpd_tls_cert_file = {}\n", files.relay_cert.display()),
        format!("smtpd_tls_key_file = {}\n", files.relay_key.display()),
        format!("smtpd_tls_CAfile = {}\n", files.ca_cert.display()),
    ] {
        assert!(lines.contains(&want), "{lines}");
    }

    // The relay's certificate, as the laptop's delivery code judges it.
    let chain = certs(&files.relay_cert);
    assert_eq!(chain.len(), 2, "leaf and CA");
    parse_private_key(&std::fs::read(&files.relay_key).unwrap()).unwrap();
    let anchors = trust_anchors(&certs(&files.ca_cert)).unwrap();
    for host in ["relay.test", "mail.relay.test", "[192.0.2.7]"] {
        verify_server_chain(&chain, &anchors, host, UnixTime::now(), &algs())
            .unwrap_or_else(|err| panic!("{host}: {err}"));
    }
    assert!(verify_server_chain(&chain, &anchors, "other.test", UnixTime::now(), &algs()).is_err());

    // A laptop certificate: trusted by the CA file and listed in the table.
    let map = dir.path().join("relay_clientcerts");
    std::fs::write(&map, "# laptops\n").unwrap();
    let out = dir.path().join("out");
    let alice = pki::ca_issue(&ca_dir, "alice", &out, &map).unwrap();
    assert_eq!(mode(&alice.cert_file), 0o600);
    let bundle = std::fs::read(&alice.cert_file).unwrap();
    let chain = parse_certificates(&bundle).unwrap();
    parse_private_key(&bundle).expect("the key is in the same file");
    assert_eq!(
        alice.fingerprint,
        Fingerprint::of(DigestKind::Sha256, &chain[0])
    );
    let verdict = judge(&chain, &alice.ca_file, &map);
    assert_eq!(verdict.verdict, CertVerdict::Trusted);
    assert_eq!(verdict.listed, listed("alice", false));
    assert_eq!(verdict.subject_cn.as_deref(), Some("alice"));
    assert_eq!(
        verdict.issuer_cn.as_deref(),
        Some("relay.test certrelay CA")
    );
    let table = std::fs::read_to_string(&map).unwrap();
    assert_eq!(table, format!("# laptops\n{} alice\n", alice.fingerprint));
    assert!(alice
        .report()
        .contains("smtp_tls_key_file = $smtp_tls_cert_file"));

    // OpenSSL agrees on both chains.
    if let Some(ok) = openssl(&[
        "verify",
        "-CAfile",
        path_str(&files.ca_cert),
        "-purpose",
        "sslclient",
        path_str(&alice.cert_file),
    ]) {
        assert!(ok.ends_with(": OK\n"), "{ok}");
        let server = openssl(&[
            "verify",
            "-CAfile",
            path_str(&files.ca_cert),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "mail.relay.test",
            path_str(&files.relay_cert),
        ]);
        assert!(server.unwrap().ends_with(": OK\n"));
    }

    // Refusals: same name again, and a second init over the same files; nothing is written.
    let other_out = dir.path().join("other");
    let err = pki::ca_issue(&ca_dir, "alice", &other_out, &map).unwrap_err();
    assert!(matches!(err, PkiError::Duplicate { line: 2, .. }), "{err}");
    assert!(!other_out.join("alice.pem").exists());
    let bob = pki::ca_issue(&ca_dir, "bob", &out, &map);
    assert!(bob.is_ok(), "{bob:?}");
    let err = pki::ca_issue(&ca_dir, "bob", &out, &dir.path().join("empty-map")).unwrap_err();
    assert!(matches!(err, PkiError::Exists(_)), "{err}");
    let err = pki::ca_init(&ca_dir, "relay.test", &[]).unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");

    // Revoking alice: still trusted by the CA, no longer listed.
    let edit = pki::revoke(&map, "alice").unwrap();
    assert!(edit.changed());
    let verdict = judge(&chain, &alice.ca_file, &map);
    assert_eq!(verdict.listed, None);
    assert!(std::fs::read_to_string(&map)
        .unwrap()
        .starts_with("# laptops\n"));
}

#[test]
fn a_ca_key_that_does_not_match_is_refused() {
    let dir = TempDir::new("pki-mismatch");
    let one = pki::ca_init(&dir.path().join("one"), "one.test", &[]).unwrap();
    let two = pki::ca_init(&dir.path().join("two"), "two.test", &[]).unwrap();
    std::fs::remove_file(&one.ca_key).unwrap();
    std::fs::copy(&two.ca_key, &one.ca_key).unwrap();
    let map = dir.path().join("map");
    let err = pki::ca_issue(&dir.path().join("one"), "x", dir.path(), &map).unwrap_err();
    assert!(err.to_string().contains("does not belong to"), "{err}");
    assert!(!map.exists());
}

#[test]
fn keygen_then_ca_sign_and_pinning_the_self_signed_certificate() {
    let dir = TempDir::new("pki-csr");
    let ca_dir = dir.path().join("ca");
    pki::ca_init(&ca_dir, "relay.test", &[]).unwrap();
    let laptop = dir.path().join("laptop");
    let keys = pki::keygen(&laptop, "bob").unwrap();
    assert_eq!(mode(&keys.key), 0o600);
    assert!(keys.report().contains(&format!("{} bob", keys.fingerprint)));
    let map = dir.path().join("relay_clientcerts");

    // Pin-only: the self-signed certificate is untrusted but listed once allowed.
    let own = certs(&keys.cert);
    let ca_file = ca_dir.join("ca.pem");
    assert!(matches!(
        judge(&own, &ca_file, &map).verdict,
        CertVerdict::Untrusted(_)
    ));
    pki::allow(&map, &keys.fingerprint.to_string(), "bob-pinned").unwrap();
    assert_eq!(
        judge(&own, &ca_file, &map).listed,
        listed("bob-pinned", false)
    );

    // The CA signs the request; the key stays the laptop's.
    let out = dir.path().join("out");
    let signed = pki::ca_sign(&ca_dir, &keys.csr, "bob", &out, &map).unwrap();
    let chain = certs(&signed.cert_file);
    assert!(parse_private_key(&std::fs::read(&signed.cert_file).unwrap()).is_err());
    let verdict = judge(&chain, &signed.ca_file, &map);
    assert_eq!(verdict.verdict, CertVerdict::Trusted);
    assert_eq!(verdict.listed, listed("bob", false));
    let spki = spki_der(&chain[0]).unwrap();
    assert_eq!(
        Fingerprint::of(DigestKind::Sha256, spki),
        keys.pubkey_fingerprint
    );
    assert!(signed.report().contains("bob.key"));

    // The public-key fingerprint matches both certificates.
    let pins = dir.path().join("pins");
    pki::allow(&pins, &keys.pubkey_fingerprint.to_string(), "bob-key").unwrap();
    assert_eq!(
        judge(&chain, &ca_file, &pins).listed,
        listed("bob-key", true)
    );
    assert_eq!(judge(&own, &ca_file, &pins).listed, listed("bob-key", true));

    // Signing again under the same name is refused; a certificate is not a request.
    let err = pki::ca_sign(&ca_dir, &keys.csr, "bob", &dir.path().join("o2"), &map).unwrap_err();
    assert!(matches!(err, PkiError::Duplicate { .. }), "{err}");
    let err = pki::ca_sign(&ca_dir, &keys.cert, "carol", &out, &map).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("bob.pem") && text.contains("a certificate, not a certificate request"));
}

#[test]
fn ca_sign_accepts_an_openssl_request() {
    let dir = TempDir::new("pki-openssl-csr");
    let ca_dir = dir.path().join("ca");
    pki::ca_init(&ca_dir, "relay.test", &[]).unwrap();
    let csr = dir.path().join("dave.csr");
    let made = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&dir.path().join("dave.key")),
        "-out",
        path_str(&csr),
        "-subj",
        "/CN=whatever",
    ]);
    if made.is_none() {
        return;
    }
    let map = dir.path().join("map");
    let signed = pki::ca_sign(&ca_dir, &csr, "dave", dir.path(), &map).unwrap();
    let chain = certs(&signed.cert_file);
    let verdict = judge(&chain, &signed.ca_file, &map);
    assert_eq!(verdict.verdict, CertVerdict::Trusted);
    assert_eq!(verdict.subject_cn.as_deref(), Some("dave"));
    assert_eq!(verdict.listed, listed("dave", false));
}

#[test]
fn fingerprint_names_a_file_that_holds_no_certificate() {
    let dir = TempDir::new("pki-notcert");
    let keys = pki::keygen(dir.path(), "eve").unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (keys.key.clone(), "a private key, not a certificate"),
        (keys.csr.clone(), "a certificate request, not a certificate"),
        (dir.write("empty.pem", ""), "empty file"),
    ];
    for (path, want) in cases {
        let err = pki::fingerprint(
            &[keys.cert.clone(), path.clone()],
            DigestKind::Sha256,
            false,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(path_str(&path)) && err.contains(want),
            "{err}"
        );
    }
}

/// A CA kept in a directory of its own, with no main.cf (as benches/compare-postfix.sh
/// keeps one): issuing lists the laptop and says there is no relay to reload.
#[test]
fn ca_issue_in_a_directory_without_main_cf_lists_the_laptop() {
    let dir = TempDir::new("ca-no-main-cf");
    let d = path_str(dir.path());
    certrelay_testkit::certrelayd_ok(dir.path(), &["ca", "init", "--hostname", "relay.test"]);
    let out = dir.path().join("out");
    let map = dir.path().join("relay_clientcerts");
    let issued = certrelay_testkit::certrelayd_ok(
        dir.path(),
        &[
            "ca",
            "issue",
            "--map",
            path_str(&map),
            "--out",
            path_str(&out),
            "alice",
        ],
    );
    let said = String::from_utf8_lossy(&issued.stdout);
    assert!(said.contains("no main.cf in"), "{said}");
    let listed = std::fs::read_to_string(&map).unwrap();
    assert!(listed.contains(" alice"), "{listed} in {d}");
}
