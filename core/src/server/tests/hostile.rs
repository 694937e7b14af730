//! Hostile clients against the session: lines of other protocols, error after error, slow
//! lines and slow DATA, and idle sessions closed to make room.

use super::*;
use crate::settings::ForbiddenCommands;

const GOODBYE: &str = "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n";
const BANNER: &str = "220 relay.example ESMTP certrelay\r\n";

fn at(secs: u64) -> Instant {
    T0 + Duration::from_secs(secs)
}

#[test]
fn a_browser_post_ends_the_session_at_its_first_line() {
    let mut sh = Shell::new(settings(), insider());
    sh.feed(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:2525\r\nContent-Length: 80\r\n\r\n\
          EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n",
    );
    assert_eq!(sh.take_wire(), format!("{BANNER}{GOODBYE}"));
    assert!(sh.closed);
    assert!(sh.open.is_none() && sh.stored.is_empty());
    assert!(sh
        .logs
        .contains(&"non-SMTP command from localhost[127.0.0.1]: POST / HTTP/1.1".to_string()));
    assert!(sh
        .logs
        .contains(&"disconnect from localhost[127.0.0.1] unknown=0/1 commands=0/1".to_string()));
    let warned = sh.outputs.iter().any(|o| {
        matches!(o, ServerOutput::Log(l) if l.level == log::Level::Warn
            && l.text.starts_with("non-SMTP command"))
    });
    assert!(warned, "logged as a warning, as Postfix does");
}

#[test]
fn lines_of_other_protocols_end_the_session_and_unknown_commands_do_not() {
    // (settings change, lines sent after EHLO, does the last one end the session)
    let names_only = ForbiddenCommands {
        verbs: vec!["CONNECT".into()],
        not_a_letter: false,
    };
    let cases: &[(Option<&ForbiddenCommands>, &str, bool)] = &[
        (None, "Host: relay.example", true),
        (None, "GET / HTTP/1.0", true),
        (None, "connect relay.example:25 HTTP/1.1", true),
        (None, "1abc", true),
        (None, "XYZZY", false),
        (None, "Host : x", false),
        (Some(&names_only), "GET / HTTP/1.0", false),
        (Some(&names_only), "1abc", false),
        (Some(&names_only), "User-Agent: curl", true),
        (Some(&names_only), "CONNECT x:25", true),
    ];
    for &(forbidden, line, ends) in cases {
        let mut set = settings();
        if let Some(f) = forbidden {
            set.forbidden_commands = f.clone();
        }
        let mut sh = Shell::new(set, outsider());
        sh.feed(b"EHLO client.example\r\n");
        sh.take_wire();
        sh.feed(format!("{line}\r\n").as_bytes());
        let want = if ends {
            GOODBYE
        } else {
            "500 5.5.2 Error: command not recognized\r\n"
        };
        assert_eq!(sh.take_wire(), want, "{line}");
        assert_eq!(sh.closed, ends, "{line}");
    }
}

#[test]
fn unknown_commands_before_ehlo_end_the_session_only_where_asked() {
    let mut relay = Shell::new(settings(), outsider());
    relay.feed(b"XYZZY\r\n");
    assert_eq!(
        relay.take_wire(),
        format!("{BANNER}500 5.5.2 Error: command not recognized\r\n")
    );
    assert!(!relay.closed);

    let laptop = ServerSettings {
        unknown_before_helo_ends: true,
        ..settings()
    };
    let mut sh = Shell::new(laptop.clone(), insider());
    sh.feed(b"XYZZY\r\nEHLO x\r\n");
    assert_eq!(sh.take_wire(), format!("{BANNER}{GOODBYE}"));
    assert!(sh.closed);
    // After EHLO an unknown command is only an error.
    let mut sh = Shell::new(laptop, insider());
    sh.feed(b"EHLO x\r\n");
    sh.take_wire();
    sh.feed(b"XYZZY\r\n");
    assert_eq!(
        sh.take_wire(),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert!(!sh.closed);
}

#[test]
fn from_the_soft_limit_on_every_reply_waits_and_the_hard_limit_closes() {
    let mut sh = Shell::new(settings(), outsider());
    sh.take_wire();
    for _ in 0..10 {
        sh.feed(b"XYZZY\r\n");
        assert_eq!(
            sh.take_wire(),
            "500 5.5.2 Error: command not recognized\r\n"
        );
    }
    // The 11th error and a NOOP pipelined behind it: the error waits a second, and the
    // NOOP is not even read before then.
    sh.now = at(5);
    sh.feed(b"XYZZY\r\nNOOP\r\n");
    assert_eq!(sh.take_wire(), "");
    assert!(!sh.s().wants_read());
    assert_eq!(sh.s().poll_timeout(), Some(at(6)));
    sh.s()
        .handle_timeout(Instant::from_millis(at(6).as_millis() - 1));
    sh.drain();
    assert_eq!(sh.take_wire(), "");
    sh.now = at(6);
    sh.s().handle_timeout(at(6));
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    // The NOOP's reply waits too: Postfix sleeps before any reply past the soft limit.
    assert_eq!(sh.s().poll_timeout(), Some(at(7)));
    sh.now = at(7);
    sh.s().handle_timeout(at(7));
    sh.drain();
    assert_eq!(sh.take_wire(), "250 2.0.0 Ok\r\n");
    assert!(sh.s().wants_read());
    // Errors 12 to 20, each a second apart; then `too many errors`, a second later still.
    let mut t = 7;
    for _ in 12..=20 {
        sh.feed(b"XYZZY\r\n");
        t += 1;
        sh.now = at(t);
        sh.s().handle_timeout(at(t));
        sh.drain();
        assert_eq!(
            sh.take_wire(),
            "500 5.5.2 Error: command not recognized\r\n"
        );
    }
    assert!(!sh.closed, "the 421 waits its own second");
    assert_eq!(sh.s().poll_timeout(), Some(at(t + 1)));
    sh.now = at(t + 1);
    sh.s().handle_timeout(at(t + 1));
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.7.0 relay.example Error: too many errors\r\n"
    );
    assert!(sh.closed && sh.s().is_closed());
}

#[test]
fn a_lost_connection_drops_the_replies_held_back() {
    let set = ServerSettings {
        soft_error_limit: 1,
        ..settings()
    };
    let mut sh = Shell::new(set, outsider());
    sh.take_wire();
    sh.feed(b"XYZZY\r\nXYZZY\r\n");
    assert_eq!(
        sh.take_wire(),
        "500 5.5.2 Error: command not recognized\r\n"
    );
    assert!(!sh.s().is_closed());
    sh.event(ServerEvent::ConnectionLost);
    assert!(sh.closed && sh.s().is_closed());
}

#[test]
fn a_command_line_must_be_complete_soon_after_its_first_byte() {
    let mut sh = Shell::new(settings(), outsider());
    sh.take_wire();
    sh.now = at(1);
    sh.feed(b"EHLO x\r\nNO");
    sh.take_wire();
    assert_eq!(sh.s().poll_timeout(), Some(at(11)));
    sh.now = at(9);
    sh.feed(b"O");
    assert_eq!(sh.s().poll_timeout(), Some(at(11)), "a byte buys no time");
    sh.s().handle_timeout(at(11));
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.4.2 relay.example Error: timeout exceeded\r\n"
    );
    assert!(sh.closed);
    assert!(sh.logs.iter().any(|l| l
        == "unknown[192.0.2.7]: command line not complete 10s after its first byte \
            (certrelay_command_time_limit)"));
    assert!(sh
        .logs
        .contains(&"timeout after EHLO from unknown[192.0.2.7]".to_string()));
}

#[test]
fn a_line_too_long_to_keep_gets_no_more_time_either() {
    let mut sh = Shell::new(settings(), outsider());
    sh.take_wire();
    sh.now = at(1);
    sh.feed(b"NOOP ");
    for i in 0..60 {
        sh.now = at(1) + Duration::from_millis(100 * i);
        sh.feed(&[b'x'; 10]);
    }
    assert_eq!(sh.s().poll_timeout(), Some(at(11)));
    // Complete (and refused): the next line has its own time.
    sh.now = at(8);
    sh.feed(b"\r\n");
    assert_eq!(sh.take_wire(), "500 5.5.0 Error: line too long\r\n");
    sh.now = at(9);
    sh.feed(b"N");
    assert_eq!(sh.s().poll_timeout(), Some(at(19)));
}

#[test]
fn data_must_keep_up_the_minimum_rate_after_its_grace_period() {
    let mut sh = Shell::new(settings(), insider());
    sh.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
    sh.take_wire();
    // Grace 30 s; then 1000 bytes per second.
    assert_eq!(sh.s().poll_timeout(), Some(at(30)));
    sh.now = at(20);
    sh.feed(&[b'a'; 9_998]);
    sh.feed(b"\r\n");
    assert_eq!(sh.s().poll_timeout(), Some(at(40)));
    sh.s().handle_timeout(at(39));
    sh.drain();
    assert!(!sh.closed);
    sh.s().handle_timeout(at(40));
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.4.2 relay.example Error: timeout exceeded\r\n"
    );
    assert!(sh.closed && sh.aborted == 1 && sh.stored.is_empty());
    assert!(
        sh.logs.iter().any(|l| l.contains(
            "DATA slower than certrelay_data_min_rate = 1000 bytes/s: 10000 bytes in 40s"
        )),
        "{:?}",
        sh.logs
    );
}

#[test]
fn a_client_keeping_up_the_rate_is_never_cut_off() {
    let mut sh = Shell::new(settings(), insider());
    sh.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
    sh.take_wire();
    // 4000 bytes a second (a 2G EDGE link at its worst, ~30 kbit/s) for 100 s.
    for s in 1..=100u64 {
        sh.now = at(s);
        let deadline = sh.s().poll_timeout().unwrap();
        assert!(deadline > sh.now, "cut off after {s}s");
        sh.feed(&[b'a'; 3_998]);
        sh.feed(b"\r\n");
    }
    sh.feed(b".\r\n");
    assert!(sh.take_wire().starts_with("250 2.0.0 Ok: queued as Q1"));
    assert_eq!(sh.stored.len(), 1);
}

#[test]
fn an_idle_session_without_mail_gives_way_when_told() {
    let mut sh = Shell::new(settings(), outsider());
    assert_eq!(sh.s().idle_since(), Some(T0));
    sh.now = at(3);
    sh.feed(b"EHLO x\r\n");
    assert_eq!(sh.s().idle_since(), Some(at(3)));
    sh.now = at(4);
    sh.feed(b"MAIL FROM:<a@b.example>\r\n");
    assert_eq!(sh.s().idle_since(), None, "a transaction is under way");
    sh.now = at(5);
    sh.feed(b"RSET\r\n");
    assert_eq!(sh.s().idle_since(), Some(at(5)));
    sh.take_wire();
    sh.now = at(65);
    sh.s().displace(at(65));
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.7.0 relay.example Error: too many connections; closing idle session\r\n"
    );
    assert!(sh.closed && sh.s().is_closed());
    assert_eq!(sh.s().idle_since(), None);
    assert!(sh.logs.contains(
        &"unknown[192.0.2.7]: closing idle session after 60s to make room for a new connection"
            .to_string()
    ));
}

#[test]
fn a_session_waiting_for_tls_counts_as_idle() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.now = at(2);
    // Keep the hand-over from running: the shell has not polled the StartTls yet.
    sh.s().handle_input(b"STARTTLS\r\n", at(2));
    assert_eq!(sh.s().idle_since(), Some(at(2)));
}
