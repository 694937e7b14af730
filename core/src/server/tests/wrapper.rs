//! Sessions on a listener in wrapper mode (`smtpd_tls_wrappermode`): the handshake before
//! anything else, the greeting inside TLS, and the same certificate checks as after
//! STARTTLS.

use super::*;

/// A shell whose session starts in wrapper mode, the handshake ending with `tls`.
fn wrapped(wanted: ServerSettings, tls: TlsFacts) -> (Shell, Vec<String>) {
    let (hs, connect) = ServerTlsHandshake::implicit(Arc::new(wanted), outsider(), T0);
    assert!(hs.is_implicit());
    assert_eq!(hs.discarded(), 0);
    assert_eq!(hs.poll_timeout(), Some(T0 + Duration::from_secs(300)));
    // A plain session builds the shell; the wrapped one replaces it.
    let mut sh = Shell::new(settings(), outsider());
    sh.wire.clear();
    sh.logs.clear();
    sh.session = Some(hs.established(tls, T0));
    sh.drain();
    (sh, vec![connect.text])
}

#[test]
fn the_greeting_comes_inside_tls_and_starttls_is_neither_offered_nor_taken() {
    let (mut sh, connect) = wrapped(
        tls_settings(ServerTlsLevel::Encrypt, true),
        tls_facts(CertVerdict::Trusted, true),
    );
    assert_eq!(connect, ["connect from unknown[192.0.2.7]"]);
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: STARTTLS
         S: 554 5.5.1 Error: TLS already active
         C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         C: DATA
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: hi
         C: .
         S: 250 2.0.0 Ok: queued as Q1",
    );
    assert!(sh
        .logs
        .iter()
        .any(|l| l.starts_with("Trusted TLS connection established from unknown[192.0.2.7]")));
    let env = &sh.stored[0].0;
    assert_eq!(env.protocol, "ESMTPS");
    assert!(env
        .received
        .render(None, "DATE")
        .contains("by relay.example (certrelay) with ESMTPS"));
}

#[test]
fn req_ccert_and_relay_clientcerts_judge_as_after_starttls() {
    // No certificate at req_ccert: the first command is refused and the session ends.
    let (mut sh, _) = wrapped(
        tls_settings(ServerTlsLevel::Encrypt, true),
        tls_facts(CertVerdict::Absent, false),
    );
    sh.take_wire();
    sh.feed(b"EHLO laptop\r\n");
    assert!(sh
        .take_wire()
        .starts_with("421 4.7.1 relay.example Error: No client certificate presented"));
    assert!(sh.closed);
    // A trusted but unlisted certificate may talk, but not relay.
    let (mut sh, _) = wrapped(
        tls_settings(ServerTlsLevel::Encrypt, false),
        tls_facts(CertVerdict::Trusted, false),
    );
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: HELO laptop
         S: 250 relay.example
         C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250 2.1.0 Ok
         S: 554 5.7.1 <you@far.example>: Relay access denied",
    );
}

#[test]
fn a_failed_handshake_logs_the_connect_stage() {
    let settings = Arc::new(tls_settings(ServerTlsLevel::Encrypt, false));
    let (hs, _) = ServerTlsHandshake::implicit(settings, outsider(), T0);
    let lines = hs.failed("peer is not speaking TLS");
    assert_eq!(
        lines[0].text,
        "TLS handshake failed from unknown[192.0.2.7]: peer is not speaking TLS"
    );
    assert_eq!(
        lines[1].text,
        "lost connection after CONNECT from unknown[192.0.2.7]"
    );
    assert_eq!(
        lines[2].text,
        "disconnect from unknown[192.0.2.7] commands=0"
    );
}
