//! The README's first command: `certrelayd demo` relays for the listed laptop, refuses the
//! unlisted one, and cleans up.

use certrelay_testkit::binary;
use std::process::{Command, Stdio};

/// `certrelayd demo` with `env` added; everything it printed, after checking it exited 0.
fn demo(env: &[(&str, String)]) -> String {
    let out = Command::new(binary("certrelayd"))
        .arg("demo")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run certrelayd demo");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn demo_shows_both_outcomes_and_exits_0() {
    let text = demo(&[]);
    // The listed laptop: verified TLS both ways, delivered, arrived at the sink.
    assert!(
        text.contains("Trusted TLS connection established from"),
        "{text}"
    );
    // The laptop's side in the shape Postfix's client logs (protocol and cipher as OpenSSL
    // names them).
    let verified = text
        .lines()
        .find(|l| l.contains("Verified TLS connection established to 127.0.0.1[127.0.0.1]:"))
        .unwrap_or_else(|| panic!("no verified connection in\n{text}"));
    assert!(
        verified.contains(": TLSv1.3 with cipher TLS_AES_"),
        "{verified}"
    );
    assert!(verified.ends_with(" bits)"), "{verified}");
    assert!(
        text.contains("status=sent (250 2.0.0 Ok: queued as"),
        "{text}"
    );
    assert!(
        text.contains("sink    | Subject: hello from alice"),
        "{text}"
    );
    // The unlisted laptop: refused by the relay, reported by the laptop.
    assert!(
        text.contains(
            "554 5.7.1 <friend@elsewhere.example>: Relay access denied; from=<mallory@laptop.demo>"
        ),
        "{text}"
    );
    assert!(text.contains("status=bounced"), "{text}");
    assert!(!text.contains("Subject: hello from mallory"), "{text}");
    // Cleaned up.
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("== a CA and the relay's certificate, in "))
        .expect("the demo names its directory");
    let root = std::path::Path::new(dir).parent().unwrap();
    assert!(!root.exists(), "{} was left behind", root.display());
}

#[test]
fn demo_moves_to_another_port_when_its_first_is_taken() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = held.local_addr().unwrap().port();
    let text = demo(&[("CERTRELAY_TEST_ONLY_DEMO_FIRST_PORT", port.to_string())]);
    assert!(
        text.contains(&format!("starting the relay on 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        text.contains("that port was taken in the meantime"),
        "{text}"
    );
    assert!(
        text.contains("done: the listed laptop relayed, the unlisted one was refused"),
        "{text}"
    );
    drop(held);
}
