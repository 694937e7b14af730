//! `certrelayd check` and `certrelay check` on real files, through the real binaries.

use certrelay_testkit::{pki, run, TempDir};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn relay_check_accepts_the_recipe_with_real_files() {
    let dir = TempDir::new("relay-ok");
    let ca = pki::Ca::new("Test CA");
    let relay = ca.issue("relay.test", &["relay.test"], false);
    let laptop = ca.issue("laptop", &[], true);
    let cert = dir.write("relay.pem", &relay.cert_pem);
    let key = dir.write("relay.key", &relay.key_pem);
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let fp = certrelay_core::fingerprint::Fingerprint::of(
        certrelay_core::fingerprint::DigestKind::Md5,
        &laptop.der,
    );
    let map = dir.write("relay_clientcerts", &format!("{fp} *.montravail.com\n"));
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\n\
             mail_owner = nobody\n\
             smtpd_use_tls = yes\n\
             smtpd_tls_cert_file = {}\n\
             smtpd_tls_key_file = {}\n\
             smtpd_tls_CAfile = {}\n\
             smtpd_tls_ask_ccert = yes\n\
             smtpd_tls_req_ccert = yes\n\
             smtpd_tls_ccert_verifydepth = 5\n\
             relay_clientcerts = hash:{}\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination\n",
            cert.display(),
            key.display(),
            ca_file.display(),
            map.display()
        ),
    );
    let out = run("certrelayd", &["-c", dir.path().to_str().unwrap(), "check"]);
    let err = stderr(&out);
    assert!(out.status.success(), "check failed:\n{err}");
    // One warning for the weak MD5 digest, with the table's place, and one for postmaster,
    // which has no virtual_alias_maps entry to go to.
    assert!(err.contains("relay_clientcerts:1"), "{err}");
    assert!(err.contains("postmaster admin@example.org"), "{err}");
    assert!(err.contains("0 error(s), 2 warning(s)"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("smtpd_tls_req_ccert = yes"), "{stdout}");
}

#[test]
fn relay_check_names_file_and_line_of_each_problem() {
    let dir = TempDir::new("relay-bad");
    dir.write(
        "main.cf",
        "# a comment\n\
         smtpd_tls_ask_ccert = perhaps\n\
         smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts\n\
         smtpd_use_tls = yes\n\
         smtpd_tls_cert_file = /nonexistent/relay.pem\n",
    );
    let out = run("certrelayd", &["-c", dir.path().to_str().unwrap(), "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let main_cf = dir.path().join("main.cf").display().to_string();
    assert!(
        err.contains(&format!("{main_cf}:2: error: smtpd_tls_ask_ccert")),
        "{err}"
    );
    // No reject anywhere: an open relay, refused, naming where to fix it.
    assert!(err.contains(&format!("{main_cf}:3: error:")), "{err}");
    assert!(
        err.contains(&format!("{main_cf}:5: error: smtpd_tls_cert_file")),
        "{err}"
    );
}

#[test]
fn check_without_main_cf_says_which_file_is_missing() {
    let dir = TempDir::new("empty");
    for bin in ["certrelayd", "certrelay"] {
        let out = run(bin, &["-c", dir.path().to_str().unwrap(), "check"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1));
        assert!(err.contains("main.cf: cannot read"), "{bin}: {err}");
    }
}

#[test]
fn laptop_check_reports_a_bad_relayhost_and_per_site_value() {
    let dir = TempDir::new("laptop-bad");
    let sites = dir.write(
        "tls_per_site",
        "[relay.test]:587 MUST\nother.test SOMETIMES\n",
    );
    dir.write(
        "main.cf",
        &format!(
            "relayhost = [relay.test:587\nsmtp_tls_per_site = hash:{}\n",
            sites.display()
        ),
    );
    let out = run("certrelay", &["-c", dir.path().to_str().unwrap(), "check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let main_cf = dir.path().join("main.cf").display().to_string();
    assert!(
        err.contains(&format!("{main_cf}:1: error: relayhost")),
        "{err}"
    );
}

#[test]
fn the_shipped_examples_check_clean_and_list_the_example_laptop() {
    let root = certrelay_testkit::workspace_root();
    for (bin, dir) in [
        ("certrelayd", "examples/relay"),
        ("certrelay", "examples/laptop"),
    ] {
        let out = std::process::Command::new(certrelay_testkit::binary(bin))
            .current_dir(&root)
            .args(["-c", dir, "check"])
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "{bin} -c {dir} check:\n{}",
            stderr(&out)
        );
    }
    // The relay's map lists the example laptop certificate, by MD5 and by SHA-256.
    let pem = std::fs::read(root.join("examples/laptop/laptop.pem")).unwrap();
    let chain = certrelay_core::cert::parse_certificates(&pem).unwrap();
    let text = std::fs::read_to_string(root.join("examples/relay/relay_clientcerts")).unwrap();
    let (table, _) = certrelay_core::table::Table::parse("relay_clientcerts", &text);
    let entries: Vec<_> = table
        .entries()
        .map(|e| (e.key.clone(), e.value.clone(), e.line as usize))
        .collect();
    let (map, _) =
        certrelay_core::fingerprint::FingerprintMap::from_table("relay_clientcerts", entries);
    let spki = certrelay_core::cert::spki_der(&chain[0]).unwrap();
    let hit = map
        .lookup_cert(&chain[0], spki)
        .expect("example laptop is listed");
    assert_eq!(
        hit.label, "laptop-sha256",
        "the stronger digest is looked up first"
    );
}
