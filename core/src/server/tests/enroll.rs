//! `XCERTRELAY` in the session: offered only inside TLS on a relay that enrolls, the request
//! lines read (and hostile ones refused in step), the shell's answer sent, input held while
//! it works.

use super::*;
use crate::enroll::{request_lines, EnrollAnswer, RequestKind, Secret};

fn enrolling(level: ServerTlsLevel) -> ServerSettings {
    ServerSettings {
        enroll: true,
        ..tls_settings(level, false)
    }
}

/// A session inside TLS (without a client certificate unless `verdict` says so), after EHLO.
fn inside_tls(settings: ServerSettings, verdict: CertVerdict, listed: bool) -> Shell {
    let mut sh = Shell::new(settings, outsider());
    sh.tls = tls_facts(verdict, listed);
    sh.feed(b"EHLO laptop\r\nSTARTTLS\r\n");
    sh.feed(b"EHLO laptop\r\n");
    let wire = sh.take_wire();
    assert!(
        wire.ends_with("250-SMTPUTF8\r\n250 XCERTRELAY\r\n"),
        "{wire}"
    );
    sh
}

fn secret() -> Secret {
    Secret::from_bytes([9, 8, 7, 6, 5])
}

fn send_request(sh: &mut Shell, der: &[u8]) {
    let mut text = String::new();
    for line in request_lines(der) {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    sh.feed(text.as_bytes());
}

#[test]
fn the_extension_is_offered_only_inside_tls_and_only_when_enrolling() {
    let mut sh = Shell::new(enrolling(ServerTlsLevel::May), outsider());
    sh.feed(b"EHLO laptop\r\n");
    assert!(!sh.take_wire().contains("XCERTRELAY"));
    sh.feed(format!("XCERTRELAY ENROLL {}\r\n", secret()).as_bytes());
    assert_eq!(
        sh.take_wire(),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert!(sh.enroll_requests.is_empty());

    // Not enrolling: unknown, inside TLS too.
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.feed(b"EHLO laptop\r\nSTARTTLS\r\nEHLO laptop\r\n");
    assert!(!sh.take_wire().contains("XCERTRELAY"));
    sh.feed(b"XCERTRELAY RENEW\r\n");
    assert_eq!(
        sh.take_wire(),
        "500 5.5.2 Error: command not recognized\r\n"
    );
}

#[test]
fn an_enrollment_is_read_whole_and_answered_with_the_shell_s_answer() {
    let mut sh = inside_tls(enrolling(ServerTlsLevel::May), CertVerdict::Absent, false);
    sh.feed(format!("XCERTRELAY ENROLL {}\r\n", secret()).as_bytes());
    assert_eq!(
        sh.take_wire(),
        "334 Send the certificate request in base64, then a line with a single dot\r\n"
    );
    let der: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    send_request(&mut sh, &der);
    // Pipelined after the request: held until the answer.
    sh.feed(b"NOOP\r\n");
    assert_eq!(sh.take_wire(), "");
    assert!(!sh.s().wants_read());
    assert_eq!(sh.s().poll_timeout(), None);
    assert_eq!(sh.enroll_requests.len(), 1);
    assert_eq!(sh.enroll_requests[0].kind, RequestKind::Code(secret()));
    assert_eq!(sh.enroll_requests[0].csr_der, der);
    let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    sh.event(ServerEvent::Enrolled(EnrollAnswer::Issued {
        name: "alice".into(),
        chain_pem: pem.into(),
    }));
    assert_eq!(
        sh.take_wire(),
        "250-2.0.0 Certificate issued for alice\r\n\
         250------BEGIN CERTIFICATE-----\r\n\
         250-AAAA\r\n\
         250------END CERTIFICATE-----\r\n\
         250 2.0.0 End of certificates\r\n\
         250 2.0.0 Ok\r\n"
    );
    assert!(sh.s().wants_read());
}

#[test]
fn a_refused_code_counts_as_an_error() {
    let mut sh = inside_tls(
        ServerSettings {
            hard_error_limit: 2,
            ..enrolling(ServerTlsLevel::May)
        },
        CertVerdict::Absent,
        false,
    );
    for round in 0..2 {
        sh.feed(format!("XCERTRELAY ENROLL {}\r\n", secret()).as_bytes());
        send_request(&mut sh, b"request");
        sh.event(ServerEvent::Enrolled(EnrollAnswer::CodeRefused));
        let wire = sh.take_wire();
        assert!(
            wire.ends_with("535 5.7.8 Enrollment code not accepted\r\n")
                || (round == 1 && wire.contains("421")),
            "{wire}"
        );
    }
    assert!(sh.closed, "two refusals reach the hard error limit");
}

#[test]
fn renewal_needs_a_trusted_listed_certificate() {
    for (verdict, listed) in [
        (CertVerdict::Absent, false),
        (CertVerdict::Untrusted("expired".into()), true),
        (CertVerdict::Trusted, false),
    ] {
        let mut sh = inside_tls(enrolling(ServerTlsLevel::May), verdict, listed);
        sh.feed(b"XCERTRELAY RENEW\r\n");
        assert_eq!(
            sh.take_wire(),
            "530 5.7.0 Renewal needs a trusted client certificate that is listed\r\n"
        );
    }
    let mut sh = inside_tls(enrolling(ServerTlsLevel::May), CertVerdict::Trusted, true);
    sh.feed(b"XCERTRELAY RENEW\r\n");
    assert!(sh.take_wire().starts_with("334 "));
    send_request(&mut sh, b"new key's request");
    assert_eq!(
        sh.enroll_requests[0].kind,
        RequestKind::Renew {
            label: "*.montravail.com".into()
        }
    );
}

#[test]
fn hostile_requests_are_refused_in_step() {
    let mut sh = inside_tls(enrolling(ServerTlsLevel::May), CertVerdict::Absent, false);
    let start = format!("XCERTRELAY ENROLL {}\r\n", secret());
    // Garbage base64: read to the dot, refused, and the next command is a command again.
    sh.feed(start.as_bytes());
    sh.feed(b"AAAA\r\n$$$$\r\nAAAA\r\n.\r\nNOOP\r\n");
    assert_eq!(
        sh.take_wire(),
        "334 Send the certificate request in base64, then a line with a single dot\r\n\
         501 5.5.2 Certificate request is not valid base64\r\n\
         250 2.0.0 Ok\r\n"
    );
    // A line over 512 octets.
    sh.feed(start.as_bytes());
    let long = format!("{}\r\nAAAA\r\n.\r\n", "A".repeat(5000));
    sh.feed(long.as_bytes());
    assert!(sh.take_wire().ends_with(
        "500 5.5.2 Certificate request line too long (76 base64 characters a line is usual)\r\n"
    ));
    // Huge: lines past the limit are dropped, not kept.
    sh.feed(start.as_bytes());
    let line = format!("{}\r\n", "A".repeat(500));
    for _ in 0..1000 {
        sh.feed(line.as_bytes());
        assert!(sh.s().buffered() < 1024);
    }
    sh.feed(b".\r\n");
    assert!(sh
        .take_wire()
        .ends_with("552 5.3.4 Certificate request longer than 8192 base64 characters\r\n"));
    // Bad arguments.
    sh.feed(b"XCERTRELAY ENROLL\r\nXCERTRELAY FETCH\r\n");
    assert_eq!(
        sh.take_wire(),
        "501 5.5.4 Syntax: XCERTRELAY ENROLL takes the last 8 symbols of the code\r\n\
         501 5.5.4 Syntax: XCERTRELAY ENROLL code | RENEW\r\n"
    );
    assert!(sh.enroll_requests.is_empty());
    assert!(sh
        .logs
        .iter()
        .any(|l| l.contains("certificate request refused")));
}

#[test]
fn a_client_that_goes_away_while_the_shell_signs_ends_the_session() {
    let mut sh = inside_tls(enrolling(ServerTlsLevel::May), CertVerdict::Absent, false);
    sh.feed(format!("XCERTRELAY ENROLL {}\r\n", secret()).as_bytes());
    send_request(&mut sh, b"request");
    sh.event(ServerEvent::ConnectionLost);
    assert!(sh.closed);
    // A late answer is ignored.
    sh.event(ServerEvent::Enrolled(EnrollAnswer::Unavailable));
    assert!(!sh.take_wire().contains("451"));
}
