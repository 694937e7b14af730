//! Typed settings the sessions run with, Postfix defaults included.
//!
//! These are plain data. [`crate::config`] builds them from `main.cf` and `master.cf`
//! (parameter names appear there and in the field docs only).

use crate::net::Cidr;
use crate::restriction::Restriction;
use crate::table::Table;
use crate::tls_policy::{MatchStrategy, TlsLevel};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

/// Whether the server offers or requires TLS (`smtpd_tls_security_level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerTlsLevel {
    /// No STARTTLS.
    #[default]
    None,
    /// STARTTLS offered.
    May,
    /// STARTTLS required before mail.
    Encrypt,
}

/// What to do with a bare LF or bare CR inside DATA (`smtpd_forbid_bare_newline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BareNewline {
    /// Reject the message with 550 5.5.2 after the end of data (default).
    #[default]
    Reject,
    /// Accept it, turning the bare LF into CR LF.
    Normalize,
}

/// Command words that end a session at once (`smtpd_forbidden_commands`): clients that speak
/// another protocol, such as a web browser made to post to an SMTP port. A line shaped like a
/// message header (`Name: value`) where a command is expected ends it too, whatever this
/// holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForbiddenCommands {
    /// Verbs, upper case (`CONNECT`, `GET`, `POST`).
    pub verbs: Vec<String>,
    /// A first word that does not begin with a letter: Postfix's default entry
    /// `regexp:{{/^[^A-Z]/ Bogus}}`, the one regular expression certrelay knows.
    pub not_a_letter: bool,
}

impl Default for ForbiddenCommands {
    fn default() -> Self {
        ForbiddenCommands {
            verbs: vec![
                String::from("CONNECT"),
                String::from("GET"),
                String::from("POST"),
            ],
            not_a_letter: true,
        }
    }
}

/// Settings of one SMTP listener (main.cf with that listener's `-o` overrides applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `myhostname`: used in the banner, EHLO reply and some reply texts.
    pub myhostname: String,
    /// `smtpd_banner` after expansion: the text after `220 ` in the greeting.
    pub banner: String,
    /// Effective TLS level (`smtpd_tls_security_level`, `smtpd_use_tls`, `smtpd_enforce_tls`,
    /// and `smtpd_tls_req_ccert`, which raises it to `Encrypt`).
    pub tls_level: ServerTlsLevel,
    /// `smtpd_tls_ask_ccert` (true also when `req_ccert` is).
    pub ask_ccert: bool,
    /// `smtpd_tls_req_ccert`: a trusted client certificate is required after STARTTLS.
    pub req_ccert: bool,
    /// `smtpd_tls_received_header`.
    pub tls_received_header: bool,
    /// `smtpd_tls_loglevel` (0..=2 used).
    pub tls_loglevel: u8,
    /// `message_size_limit` in bytes (0 = unlimited).
    pub message_size_limit: u64,
    /// `smtpd_recipient_limit`.
    pub recipient_limit: usize,
    /// `smtpd_timeout`: the longest wait for a command or a piece of DATA.
    pub timeout: Duration,
    /// `smtpd_hard_error_limit`: errors after which the session is closed with 421.
    pub hard_error_limit: u32,
    /// `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// `smtpd_soft_error_limit`: from this many errors on, every reply waits
    /// `error_sleep_time`.
    pub soft_error_limit: u32,
    /// `smtpd_error_sleep_time`.
    pub error_sleep_time: Duration,
    /// `smtpd_forbidden_commands`.
    pub forbidden_commands: ForbiddenCommands,
    /// An unknown command before EHLO/HELO ends the session (the laptop's listener: its
    /// clients are local mail programs, so anything else is a web page or an attacker).
    pub unknown_before_helo_ends: bool,
    /// `certrelay_command_time_limit`: a command line must be complete this long after its
    /// first byte (zero: no limit beyond `timeout`).
    pub command_time_limit: Duration,
    /// `certrelay_data_min_rate`: the slowest DATA accepted, in bytes per second, once
    /// `data_rate_grace` has passed (0: no minimum).
    pub data_min_rate: u64,
    /// `certrelay_data_rate_grace`: the head start DATA gets before its rate counts.
    pub data_rate_grace: Duration,
    /// `smtpd_relay_restrictions` (empty by default, see SPEC A2).
    pub relay_restrictions: Vec<Restriction>,
    /// `smtpd_recipient_restrictions`.
    pub recipient_restrictions: Vec<Restriction>,
    /// `mynetworks`.
    pub mynetworks: Vec<Cidr>,
    /// `mydestination`, lower case.
    pub mydestination: Vec<String>,
    /// `relay_domains`, lower case (subdomains match too).
    pub relay_domains: Vec<String>,
    /// Refuse at RCPT a recipient that would stay on this host (at a `mydestination` domain
    /// or unqualified, after `virtual_alias_maps`): the relay sets it, having no mailboxes.
    /// Off by default: the laptop's listener takes local mail for anyone and sends it all
    /// on to the relay.
    pub refuse_local_recipients: bool,
    /// `virtual_alias_maps`, searched in order; read by the shell (the core reads no file).
    pub virtual_alias_maps: Vec<Table>,
    /// `hopcount_limit`: more `Received:` and `Delivered-To:` headers refuse the message.
    pub hopcount_limit: u32,
    /// `smtpd_sender_ccert_maps`, searched in order: the senders each `relay_clientcerts`
    /// label owns, for `reject_sender_ccert_mismatch`; read by the shell.
    pub sender_ccert_maps: Vec<Table>,
    /// `smtputf8_enable`: offer SMTPUTF8 (RFC 6531), accept it on MAIL, and refuse command
    /// lines that are not valid UTF-8.
    pub smtputf8_enable: bool,
    /// Offer `XCERTRELAY` inside TLS (pairing and renewal of laptops): the relay's shell
    /// turns it on when `certrelay_enroll_ca_cert_file` is set and answers the requests.
    pub enroll: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            myhostname: String::from("localhost"),
            banner: String::from("localhost ESMTP certrelay"),
            tls_level: ServerTlsLevel::None,
            ask_ccert: false,
            req_ccert: false,
            tls_received_header: false,
            tls_loglevel: 0,
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            timeout: Duration::from_secs(300),
            hard_error_limit: 20,
            bare_newline: BareNewline::Reject,
            soft_error_limit: 10,
            error_sleep_time: Duration::from_secs(1),
            forbidden_commands: ForbiddenCommands::default(),
            unknown_before_helo_ends: false,
            command_time_limit: Duration::from_secs(10),
            data_min_rate: 1000,
            data_rate_grace: Duration::from_secs(30),
            relay_restrictions: Vec::new(),
            recipient_restrictions: vec![
                Restriction::PermitMynetworks,
                Restriction::PermitTlsClientcerts,
                Restriction::RejectUnauthDestination,
            ],
            mynetworks: Vec::new(),
            mydestination: vec![String::from("localhost")],
            relay_domains: Vec::new(),
            refuse_local_recipients: false,
            virtual_alias_maps: Vec::new(),
            hopcount_limit: 50,
            sender_ccert_maps: Vec::new(),
            smtputf8_enable: true,
            enroll: false,
        }
    }
}

/// How the client tells that the server it reached is this very host (a mail loop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfCheck {
    /// `myhostname`: a server that greets with it (220 or EHLO reply) is this host.
    pub myhostname: String,
    /// The next hop the server was found for, named in the reason.
    pub nexthop: String,
}

/// Settings of the SMTP client for one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// When set, a server that greets with our own name fails every recipient with 5.4.6.
    pub self_check: Option<SelfCheck>,
    /// `smtp_helo_name` (default `$myhostname`): the name sent in EHLO/HELO.
    pub helo_name: String,
    /// The TLS level for this next hop, after the per-site policy was applied.
    pub tls_level: TlsLevel,
    /// `smtp_helo_timeout`, `smtp_mail_timeout`, `smtp_rcpt_timeout` and others: the longest
    /// wait for a reply to a command.
    pub command_timeout: Duration,
    /// `smtp_data_done_timeout`: the longest wait for the reply after the final dot.
    pub data_done_timeout: Duration,
    /// `smtp_tls_secure_cert_match`: the names a server certificate may present at `secure`.
    pub secure_cert_match: Vec<MatchStrategy>,
    /// `smtp_tls_verify_cert_match`: the names a server certificate may present at `verify`.
    pub verify_cert_match: Vec<MatchStrategy>,
    /// `smtp_line_length_limit`: longer message lines are broken on the way out (0: never).
    pub line_length_limit: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            self_check: None,
            helo_name: String::from("localhost"),
            tls_level: TlsLevel::None,
            command_timeout: Duration::from_secs(300),
            data_done_timeout: Duration::from_secs(600),
            secure_cert_match: vec![MatchStrategy::Nexthop, MatchStrategy::DotNexthop],
            verify_cert_match: vec![MatchStrategy::Hostname],
            line_length_limit: 998,
        }
    }
}
