//! The laptop's helper commands through the real `certrelay` binary.

use certrelay_suite::{binary, workspace_root, TempDir};
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
