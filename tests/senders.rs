//! Senders bound to a certificate (`smtpd_sender_ccert_maps`, `reject_sender_ccert_mismatch`)
//! with the real `certrelayd` on loopback: a listed laptop sends as the addresses its label
//! owns and is refused (553) for any other; a reload applies a new map; `check` refuses
//! what would not work; `explain` shows the step.

use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::binaries::certrelayd;
use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::{client_config, Ca, Issued};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, wait_until, TempDir};

/// The SMTP dialogue of a laptop: plain greeting and EHLO, STARTTLS with its certificate,
/// then commands inside TLS.
struct Laptop(Client);

impl Laptop {
    fn connect(port: u16, ca_pem: &str, cert: &Issued) -> Laptop {
        let mut c = Client::greeted(port);
        c.tls(client_config(ca_pem, Some(cert.pems())));
        let ehlo = c.cmd("EHLO laptop.test");
        assert!(ehlo.starts_with("250"), "{ehlo}");
        Laptop(c)
    }

    fn cmd(&mut self, line: &str) -> String {
        self.0.cmd(line)
    }

    /// MAIL and RCPT as `sender`; the RCPT reply, or the MAIL reply when that refused.
    fn rcpt_as(&mut self, sender: &str, rcpt: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{sender}>"));
        if !r.starts_with("250") {
            return r;
        }
        self.cmd(&format!("RCPT TO:<{rcpt}>"))
    }

    /// A whole message as `sender`: the reply to the final dot, or the first refusal.
    fn send_as(&mut self, sender: &str, rcpt: &str) -> String {
        let r = self.rcpt_as(sender, rcpt);
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "{r}");
        self.cmd(&format!("Subject: from {sender}\r\n\r\nhello\r\n."))
    }
}

/// A relay directory: the laptop's certificate listed with label `alice` (a second table
/// lists it again as `mallory`, which must not count), `senders` as the senders map, and
/// `restrictions` as `smtpd_relay_restrictions`; delivery onward goes to `sink_port`.
struct Setup {
    dir: TempDir,
    ca: Ca,
    laptop: Issued,
    port: u16,
}

impl Setup {
    fn new(label: &str, senders: &str, restrictions: &str, sink_port: u16) -> Setup {
        let dir = TempDir::new(label);
        let ca = Ca::new("Test CA");
        let server = ca.issue("relay.test", &["relay.test"], false);
        let laptop = ca.issue("laptop", &[], true);
        let md5 = Fingerprint::of(DigestKind::Md5, &laptop.der);
        dir.write("relay.pem", &server.cert_pem);
        dir.write("relay.key", &server.key_pem);
        dir.write("ca.pem", &ca.cert_pem);
        dir.write("relay_clientcerts", &format!("{md5} alice\n"));
        dir.write("more_clientcerts", &format!("{md5} mallory\n"));
        dir.write("senders", senders);
        dir.write("virtual", "postmaster admin@elsewhere.example\n");
        let d = dir.path().display();
        dir.write(
            "main.cf",
            &format!(
                "myhostname = relay.test\n\
                 mail_owner = nobody\n\
                 smtpd_peername_lookup = no\n\
                 mydestination = relay.test\n\
                 relayhost = [127.0.0.1]:{sink_port}\n\
                 minimal_backoff_time = 1s\n\
                 queue_run_delay = 1s\n\
                 mynetworks = 198.51.100.0/24\n\
                 queue_directory = {d}/spool\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {d}/relay.pem\n\
                 smtpd_tls_key_file = {d}/relay.key\n\
                 smtpd_tls_CAfile = {d}/ca.pem\n\
                 smtpd_tls_ask_ccert = yes\n\
                 relay_clientcerts = hash:{d}/relay_clientcerts, hash:{d}/more_clientcerts\n\
                 virtual_alias_maps = hash:{d}/virtual\n\
                 smtpd_sender_ccert_maps = texthash:{d}/senders\n\
                 smtpd_relay_restrictions = {restrictions}\n"
            ),
        );
        let port = certrelay_testkit::free_port();
        dir.write(
            "master.cf",
            &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
        );
        Setup {
            dir,
            ca,
            laptop,
            port,
        }
    }

    fn start(&self) -> Daemon {
        Daemon::start(
            &binary("certrelayd"),
            &["-c", self.dir.path().to_str().unwrap()],
            "daemon started",
        )
    }

    fn laptop(&self) -> Laptop {
        Laptop::connect(self.port, &self.ca.cert_pem, &self.laptop)
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = certrelayd(self.dir.path(), args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

const RULES: &str = "permit_mynetworks, reject_sender_ccert_mismatch, permit_tls_clientcerts, \
                     reject_unauth_destination";
const ALICE_OWNS: &str = "# label  owned senders\nalice  alice@example.net, @alice.example\n";

fn not_owned(sender: &str) -> String {
    format!("553 5.7.1 <{sender}>: Sender address rejected: not owned by certificate alice")
}

#[test]
fn a_listed_laptop_sends_only_as_the_senders_its_label_owns() {
    let sink = Sink::start(SinkOptions::default());
    let setup = Setup::new("senders-owned", ALICE_OWNS, RULES, sink.port());
    let relay = setup.start();
    let mut laptop = setup.laptop();

    // Its own address and any address of its domain are relayed.
    for sender in [
        "alice@example.net",
        "Alice@EXAMPLE.net",
        "news@alice.example",
    ] {
        let r = laptop.send_as(sender, "friend@elsewhere.example");
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{sender}: {r}");
    }
    // Bounces (the null sender) are nobody's and pass.
    let r = laptop.send_as("", "friend@elsewhere.example");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "<>: {r}");
    let delivered = wait_until("the sink has the four messages", || {
        let m = sink.messages();
        (m.len() == 4).then_some(m)
    });
    let mut senders: Vec<&str> = delivered.iter().map(|m| m.sender.as_str()).collect();
    senders.sort_unstable();
    assert_eq!(
        senders,
        [
            "",
            "Alice@EXAMPLE.net",
            "alice@example.net",
            "news@alice.example"
        ]
    );

    // Anyone else's address, the label's subdomains and extensions of its address are not
    // its own: refused at RCPT with Postfix's reply shape, and logged as a reject.
    for sender in [
        "bob@example.net",
        "ceo@example.net",
        "x@mail.alice.example",
        "alice+tag@example.net",
    ] {
        let r = laptop.rcpt_as(sender, "friend@elsewhere.example");
        assert_eq!(r, not_owned(sender), "{sender}");
        assert_eq!(laptop.cmd("RSET"), "250 2.0.0 Ok");
        relay.wait_log(&format!(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: {}; from=<{sender}> \
             to=<friend@elsewhere.example> proto=ESMTP helo=<laptop.test>",
            not_owned(sender)
        ));
    }
    assert_eq!(laptop.cmd("QUIT"), "221 2.0.0 Bye");
    assert_eq!(sink.messages().len(), 4, "nothing refused was delivered");
    assert!(relay.stop().success());
}

#[test]
fn a_label_without_an_entry_owns_no_sender() {
    let sink = Sink::start(SinkOptions::default());
    // The laptop is `alice` in the first relay_clientcerts table: the `mallory` entry of
    // the second table (same certificate) and its senders do not count.
    let setup = Setup::new(
        "senders-none",
        "bob bob@example.net\nmallory @example.net\n",
        RULES,
        sink.port(),
    );
    let relay = setup.start();
    let mut laptop = setup.laptop();
    for sender in ["alice@example.net", "bob@example.net", "x@example.net"] {
        let r = laptop.rcpt_as(sender, "friend@elsewhere.example");
        assert_eq!(r, not_owned(sender), "{sender}");
        laptop.cmd("RSET");
    }
    assert!(relay.stop().success());
}

#[test]
fn sighup_applies_a_new_senders_map_and_keeps_the_old_one_when_the_new_is_broken() {
    let sink = Sink::start(SinkOptions::default());
    let setup = Setup::new("senders-reload", ALICE_OWNS, RULES, sink.port());
    let relay = setup.start();
    let far = "friend@elsewhere.example";
    assert_eq!(
        setup.laptop().rcpt_as("bob@example.net", far),
        not_owned("bob@example.net")
    );

    setup.dir.write("senders", "alice bob@example.net\n");
    relay.signal("HUP");
    relay.wait_log("configuration reloaded");
    let mut laptop = setup.laptop();
    assert_eq!(laptop.rcpt_as("bob@example.net", far), "250 2.1.5 Ok");
    laptop.cmd("RSET");
    assert_eq!(
        laptop.rcpt_as("alice@example.net", far),
        not_owned("alice@example.net")
    );

    // An entry that is not an address: the reload is refused at its line, the map before
    // it keeps serving.
    setup.dir.write(
        "senders",
        "alice bob@example.net\ncarol carol@@example.net\n",
    );
    relay.signal("HUP");
    relay.wait_log("configuration not reloaded");
    let senders = setup.dir.path().join("senders");
    let want = format!(
        "error: {}:2: smtpd_sender_ccert_maps entry \"carol\": \"carol@@example.net\" is not a mail address",
        senders.display()
    );
    assert!(
        relay.log().contains(&want),
        "{want} not in\n{}",
        relay.log()
    );
    assert_eq!(
        setup.laptop().rcpt_as("bob@example.net", far),
        "250 2.1.5 Ok"
    );
    assert!(relay.stop().success());
}

#[test]
fn check_refuses_the_rule_without_a_map_and_bad_entries_and_warns_about_an_unused_map() {
    let setup = Setup::new("senders-check", ALICE_OWNS, RULES, 9);
    let (ok, text) = setup.run(&["check"]);
    assert!(ok, "{text}");
    let about_senders = |text: &str| {
        text.lines()
            .filter(|l| {
                l.contains("sender_ccert") && (l.contains(": warning: ") || l.contains(": error: "))
            })
            .count()
    };
    assert_eq!(about_senders(&text), 0, "{text}");

    let main_cf = setup.dir.path().join("main.cf");
    let main = std::fs::read_to_string(&main_cf).unwrap();

    // The map without the rule: a warning at the map's line; the relay would still start.
    let unused = main.replace(
        "smtpd_relay_restrictions = permit_mynetworks, reject_sender_ccert_mismatch,",
        "smtpd_relay_restrictions = permit_mynetworks,",
    );
    setup.dir.write("main.cf", &unused);
    let (ok, text) = setup.run(&["check"]);
    assert!(ok, "{text}");
    let line = main_line(&unused, "smtpd_sender_ccert_maps");
    assert!(
        text.contains(&format!(
            "{}:{line}: warning: smtpd_sender_ccert_maps is set but neither",
            main_cf.display()
        )),
        "{text}"
    );

    // The rule without the map: refused (it would refuse every listed laptop's mail).
    let no_map: String = main
        .lines()
        .filter(|l| !l.starts_with("smtpd_sender_ccert_maps"))
        .map(|l| format!("{l}\n"))
        .collect();
    setup.dir.write("main.cf", &no_map);
    let (ok, text) = setup.run(&["check"]);
    assert!(!ok, "{text}");
    let line = main_line(&no_map, "smtpd_relay_restrictions");
    assert!(
        text.contains(&format!(
            "{}:{line}: error: smtpd_relay_restrictions = ",
            main_cf.display()
        )) && text.contains("reject_sender_ccert_mismatch needs smtpd_sender_ccert_maps"),
        "{text}"
    );
    let started = std::process::Command::new(binary("certrelayd"))
        .args(["-c", setup.dir.path().to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reject_sender_ccert_mismatch needs smtpd_sender_ccert_maps"),
        "{err}"
    );

    // Entries that are not addresses: errors at their file and line.
    setup.dir.write("main.cf", &main);
    setup
        .dir
        .write("senders", "alice alice@example.net\n\nbob bob\ncarol @\n");
    let (ok, text) = setup.run(&["check"]);
    assert!(!ok, "{text}");
    let senders = setup.dir.path().join("senders").display().to_string();
    assert!(
        text.contains(&format!(
            "{senders}:3: error: smtpd_sender_ccert_maps entry \"bob\": \"bob\" has no domain"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{senders}:4: error: smtpd_sender_ccert_maps entry \"carol\""
        )),
        "{text}"
    );

    // A map that is not there.
    std::fs::remove_file(setup.dir.path().join("senders")).unwrap();
    let (ok, text) = setup.run(&["check"]);
    assert!(!ok && text.contains("smtpd_sender_ccert_maps"), "{text}");
}

/// The 1-based line of `main` that sets `name`.
fn main_line(main: &str, name: &str) -> usize {
    main.lines()
        .position(|l| l.starts_with(&format!("{name} =")))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{name} not in\n{main}"))
}

#[test]
fn explain_shows_whether_the_certificate_owns_the_sender() {
    let setup = Setup::new("senders-explain", ALICE_OWNS, RULES, 9);
    let cert = setup.dir.write("laptop.pem", &setup.laptop.cert_pem);
    let cert = cert.to_str().unwrap();
    let senders = setup.dir.path().join("senders").display().to_string();
    let explain = |from: &str| {
        let (ok, text) = setup.run(&[
            "explain",
            "--cert",
            cert,
            "--rcpt",
            "friend@elsewhere.example",
            "--from",
            from,
        ]);
        assert!(ok, "{text}");
        text
    };
    let t = explain("news@alice.example");
    assert!(
        t.contains(&format!(
            "sender <news@alice.example> (reject_sender_ccert_mismatch in \
             smtpd_relay_restrictions): certificate label \"alice\" in smtpd_sender_ccert_maps: \
             owned, by \"@alice.example\" at {senders}:2"
        )),
        "{t}"
    );
    assert!(
        t.contains("RCPT TO:<friend@elsewhere.example> accepted (permit_tls_clientcerts"),
        "{t}"
    );
    let t = explain("bob@example.net");
    assert!(
        t.contains(&format!(
            "not owned: the entry at {senders}:2 does not list it"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "refused with {} (reject_sender_ccert_mismatch (item 2 of smtpd_relay_restrictions))",
            not_owned("bob@example.net")
        )),
        "{t}"
    );
    let t = explain("");
    assert!(t.contains("sender <> (reject_sender_ccert_mismatch in smtpd_relay_restrictions): the null sender is not checked"), "{t}");
    // Without a certificate the step does not apply.
    let (ok, t) = setup.run(&[
        "explain",
        "--rcpt",
        "friend@elsewhere.example",
        "--from",
        "bob@example.net",
    ]);
    assert!(ok, "{t}");
    assert!(
        t.contains("not checked, the client has no certificate listed in relay_clientcerts"),
        "{t}"
    );
    assert!(t.contains("Relay access denied"), "{t}");
}
