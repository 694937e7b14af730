//! The laptop's helper commands through the real `certrelay` binary.

use certrelay_testkit::{binary, run_ok, workspace_root, TempDir};
use std::process::{Command, Output, Stdio};

fn certrelay(args: &[&str]) -> Output {
    Command::new(binary("certrelay"))
        .current_dir(workspace_root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run certrelay")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn explain_walks_the_per_site_policy_for_the_relayhost_and_other_destinations() {
    let out = certrelay(&["-c", "examples/laptop", "explain"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("global level: verify"), "{text}");
    assert!(
        text.contains("lookup [relay.example.net]:587: MUST (examples/laptop/tls_per_site:2)"),
        "{text}"
    );
    assert!(text.contains("=> TLS level verify"), "{text}");

    let dir = TempDir::new("explain");
    let sites = dir.write(
        "sites",
        "plain.example NONE\nmaybe.example MAY\nbad.example SOMETIMES\n",
    );
    dir.write(
        "main.cf",
        &format!(
            "smtp_enforce_tls = yes\nsmtp_tls_per_site = texthash:{}\n",
            sites.display()
        ),
    );
    let d = dir.path().to_str().unwrap();
    let text = stdout(&certrelay(&[
        "-c",
        d,
        "explain",
        "plain.example",
        "maybe.example",
        "bad.example",
    ]));
    let block = |name: &str| {
        let start = text
            .find(&format!("{name}:"))
            .unwrap_or_else(|| panic!("{text}"));
        text[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        block("plain.example").ends_with("=> TLS level none"),
        "{text}"
    );
    assert!(
        block("maybe.example").ends_with("=> TLS level verify"),
        "MAY does not weaken: {text}"
    );
    assert!(
        block("bad.example").ends_with("=> deferred: 4.7.5 client TLS configuration problem"),
        "{text}"
    );
}

#[test]
fn fingerprint_and_keygen() {
    let out = certrelay(&[
        "fingerprint",
        "--digest",
        "md5",
        "examples/laptop/laptop.pem",
    ]);
    let text = stdout(&out);
    assert!(text.starts_with("md5 Fingerprint="), "{text}");
    let map =
        std::fs::read_to_string(workspace_root().join("examples/relay/relay_clientcerts")).unwrap();
    let md5 = text.trim().strip_prefix("md5 Fingerprint=").unwrap();
    assert!(
        map.contains(md5),
        "the example map lists the example laptop by MD5"
    );

    let dir = TempDir::new("keygen");
    let d = dir.path().to_str().unwrap();
    let out = certrelay(&["keygen", "--out", d, "laptop7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["laptop7.key", "laptop7.csr", "laptop7.pem"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let again = certrelay(&["keygen", "--out", d, "laptop7"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "existing files are never overwritten"
    );
    let bad = certrelay(&["fingerprint", &format!("{d}/laptop7.key")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("a private key, not a certificate"));
}

#[test]
fn relay_explain_names_the_deciding_rule() {
    use certrelay_core::fingerprint::{DigestKind, Fingerprint};
    use certrelay_testkit::pki;
    let dir = TempDir::new("explain-relay");
    let ca = pki::Ca::new("Test CA");
    let relay = ca.issue("relay.test", &["relay.test"], false);
    let listed = ca.issue("listed", &[], true);
    let unlisted = ca.issue("unlisted", &[], true);
    let selfie = pki::self_signed_client("selfie");
    for (name, text) in [
        ("relay.pem", &relay.cert_pem),
        ("relay.key", &relay.key_pem),
        ("ca.pem", &ca.cert_pem),
        ("listed.pem", &listed.cert_pem),
        ("unlisted.pem", &unlisted.cert_pem),
        ("selfie.pem", &selfie.cert_pem),
    ] {
        dir.write(name, text);
    }
    dir.write(
        "map",
        &format!("{} bob\n", Fingerprint::of(DigestKind::Md5, &listed.der)),
    );
    let d = dir.path().display().to_string();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nmydestination = relay.test\nmynetworks = 127.0.0.0/8\n\
             smtpd_use_tls = yes\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nrelay_clientcerts = hash:{d}/map\n"
        ),
    );
    dir.write(
        "master.cf",
        "127.0.0.1:2525 inet n - n - - smtpd\n127.0.0.1:2587 inet n - n - - smtpd\n  -o smtpd_tls_req_ccert=yes\n",
    );
    let explain = |args: &[&str]| {
        let mut all = vec!["-c", &d, "explain"];
        all.extend_from_slice(args);
        stdout(&run_ok("certrelayd", &all))
    };
    let cert = |n: &str| format!("{d}/{n}.pem");
    let far = ["--rcpt", "friend@elsewhere.example"];

    let t = explain(&[&["--cert", &cert("listed")], &far[..]].concat());
    assert!(
        t.contains("listed in relay_clientcerts by its certificate MD5 fingerprint, label \"bob\""),
        "{t}"
    );
    assert!(
        t.contains("accepted (permit_tls_clientcerts (item 2 of smtpd_recipient_restrictions))"),
        "{t}"
    );

    let t = explain(&[&["--cert", &cert("unlisted")], &far[..]].concat());
    assert!(t.contains("not listed in relay_clientcerts"), "{t}");
    assert!(
        t.contains("refused with 554 5.7.1 <friend@elsewhere.example>: Relay access denied"),
        "{t}"
    );
    assert!(t.contains("reject_unauth_destination"), "{t}");

    let t = explain(&[&["--cert", &cert("selfie"), "--port", "2587"], &far[..]].concat());
    assert!(t.contains("untrusted:"), "{t}");
    assert!(
        t.contains("421 4.7.1 relay.test Error: Client certificate not trusted"),
        "{t}"
    );

    let t = explain(&["--cert", &cert("unlisted"), "--rcpt", "user@relay.test"]);
    assert!(
        t.contains("RCPT TO:<user@relay.test> accepted"),
        "local destination: {t}"
    );

    let t = explain(&[&["--client", "127.0.0.1"], &far[..]].concat());
    assert!(t.contains("accepted (permit_mynetworks"), "{t}");
}

/// `certrelayd --help | head -1`, `certrelay queue | head`: output into a pipe nobody reads
/// any more ends the program as SIGPIPE ends a Unix filter, never with a panic.
#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let runs: [(&str, &[&str]); 3] = [
        ("certrelayd", &["--help"]),
        ("certrelayd", &["-c", "examples/relay", "check"]),
        ("certrelay", &["-c", "examples/laptop", "explain"]),
    ];
    for (program, args) in runs {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(binary(program))
            .current_dir(workspace_root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{program} {args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(SIGPIPE),
            "{program} {args:?}: {:?} {err}",
            out.status
        );
    }
}

/// SIGPIPE's number on Linux (every architecture the suite runs on).
const SIGPIPE: i32 = 13;
