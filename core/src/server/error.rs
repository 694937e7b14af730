//! Every refusal the server can send, and the one reply each maps to.
//!
//! The table is one `match` so that it can be audited against SPEC.md at a glance.

use crate::reply::Reply;
use alloc::format;
use alloc::string::String;
use core::fmt;

/// A command or message the server refuses, or a reason it ends the session.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// A command line over 512 octets.
    LineTooLong,
    /// An empty command line.
    EmptyLine,
    /// A verb we do not know.
    Unrecognized,
    /// A known verb with arguments that do not fit it; the text is the usage.
    Syntax(&'static str),
    /// `MAIL FROM:` with an address that does not parse.
    BadSender,
    /// `RCPT TO:` with an address that does not parse (or `<>`).
    BadRecipient,
    /// A command line that is not valid UTF-8 while `smtputf8_enable` is on (malformed or
    /// overlong sequences, surrogates).
    BadUtf8,
    /// A UTF-8 local part in a transaction whose MAIL did not carry `SMTPUTF8`.
    Smtputf8Undeclared,
    /// An ESMTP parameter we did not advertise.
    UnsupportedOption(String),
    /// `SIZE=` that is not a number.
    BadSize,
    /// `SIZE=` over `message_size_limit`.
    SizeExceedsLimit,
    /// `DATA` after every `RCPT` was refused.
    NoValidRecipients,
    /// `MAIL` inside a transaction.
    NestedMail,
    /// `RCPT` before `MAIL`.
    NeedMail,
    /// `DATA` before any accepted `RCPT`.
    NeedRcpt,
    /// More recipients than `smtpd_recipient_limit`.
    TooManyRecipients,
    /// STARTTLS while TLS is off.
    TlsNotImplemented,
    /// STARTTLS inside TLS.
    TlsAlreadyActive,
    /// TLS is configured but the shell cannot use its key or certificate.
    TlsUnavailable,
    /// A command other than EHLO/HELO/STARTTLS/NOOP/QUIT before TLS, at level `encrypt`.
    StartTlsFirst,
    /// `req_ccert` and the client sent no certificate.
    NoClientCert,
    /// `req_ccert` and the certificate did not verify.
    UntrustedClientCert,
    /// `smtpd_hard_error_limit` reached.
    TooManyErrors,
    /// `smtpd_timeout` passed without input.
    Timeout,
    /// A bare LF or CR inside DATA with `smtpd_forbid_bare_newline = reject`.
    BareNewline,
    /// DATA over `message_size_limit`.
    MessageTooBig,
    /// More `Received:` and `Delivered-To:` fields than `hopcount_limit`: a mail loop.
    TooManyHops,
    /// The shell could not write the message.
    QueueWriteError,
    /// The shell is out of space for the message.
    InsufficientStorage,
    /// Refused by the restriction lists, with the reply they chose.
    Policy(Reply),
    /// A line of another protocol where a command was expected (`smtpd_forbidden_commands`,
    /// a header-shaped line; on the laptop's listener any unknown command before EHLO).
    NonSmtpCommand,
    /// Every session slot is taken and this idle session gives way to a new connection.
    Displaced,
}

impl ServerError {
    /// The reply sent for this error. `host` is `myhostname`.
    pub fn reply(&self, host: &str) -> Reply {
        let (code, text) = match self {
            ServerError::LineTooLong => (500, String::from("5.5.0 Error: line too long")),
            ServerError::EmptyLine => (500, String::from("5.5.2 Error: bad syntax")),
            ServerError::Unrecognized => (500, String::from("5.5.2 Error: command not recognized")),
            ServerError::Syntax(usage) => (501, format!("5.5.4 Syntax: {usage}")),
            ServerError::BadSender => (501, String::from("5.1.7 Bad sender address syntax")),
            ServerError::BadRecipient => (501, String::from("5.1.3 Bad recipient address syntax")),
            ServerError::BadUtf8 => (500, String::from("5.5.2 Error: bad UTF-8 syntax")),
            ServerError::Smtputf8Undeclared => (
                553,
                String::from("5.6.7 Must declare SMTPUTF8 to send unicode address"),
            ),
            ServerError::UnsupportedOption(o) => (555, format!("5.5.4 Unsupported option: {o}")),
            ServerError::BadSize => (501, String::from("5.5.4 Bad message size syntax")),
            ServerError::SizeExceedsLimit => {
                (552, String::from("5.3.4 Message size exceeds fixed limit"))
            }
            ServerError::NestedMail => (503, String::from("5.5.1 Error: nested MAIL command")),
            ServerError::NeedMail => (503, String::from("5.5.1 Error: need MAIL command")),
            ServerError::NeedRcpt => (503, String::from("5.5.1 Error: need RCPT command")),
            ServerError::NoValidRecipients => {
                (554, String::from("5.5.1 Error: no valid recipients"))
            }
            ServerError::TooManyRecipients => {
                (452, String::from("4.5.3 Error: too many recipients"))
            }
            ServerError::TlsNotImplemented => {
                (502, String::from("5.5.1 Error: command not implemented"))
            }
            ServerError::TlsAlreadyActive => (554, String::from("5.5.1 Error: TLS already active")),
            ServerError::TlsUnavailable => (
                454,
                String::from("4.7.0 TLS not available due to local problem"),
            ),
            ServerError::StartTlsFirst => (
                530,
                String::from("5.7.0 Must issue a STARTTLS command first"),
            ),
            ServerError::NoClientCert => (
                421,
                format!("4.7.1 {host} Error: No client certificate presented"),
            ),
            ServerError::UntrustedClientCert => (
                421,
                format!("4.7.1 {host} Error: Client certificate not trusted"),
            ),
            ServerError::TooManyErrors => (421, format!("4.7.0 {host} Error: too many errors")),
            ServerError::Timeout => (421, format!("4.4.2 {host} Error: timeout exceeded")),
            ServerError::BareNewline => (550, format!("5.5.2 {host} Error: bare <LF> received")),
            ServerError::MessageTooBig => (552, String::from("5.3.4 Error: message file too big")),
            ServerError::TooManyHops => (554, String::from("5.4.0 Error: too many hops")),
            ServerError::QueueWriteError => {
                (451, String::from("4.3.0 Error: queue file write error"))
            }
            ServerError::InsufficientStorage => {
                (452, String::from("4.3.1 Insufficient system storage"))
            }
            ServerError::Policy(reply) => return reply.clone(),
            ServerError::NonSmtpCommand => (
                221,
                String::from("2.7.0 Error: I can break rules, too. Goodbye."),
            ),
            ServerError::Displaced => (
                421,
                format!("4.7.0 {host} Error: too many connections; closing idle session"),
            ),
        };
        Reply::new(code, text)
    }

    /// True when the session ends after this reply.
    pub fn closes_session(&self) -> bool {
        matches!(
            self,
            ServerError::NoClientCert
                | ServerError::UntrustedClientCert
                | ServerError::TooManyErrors
                | ServerError::Timeout
                | ServerError::NonSmtpCommand
                | ServerError::Displaced
        )
    }
}

/// The reply as logs show it, with `myhostname` left as `<myhostname>`.
impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reply("<myhostname>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn reply_table_matches_spec() {
        let table: &[(ServerError, &str)] = &[
            (ServerError::LineTooLong, "500 5.5.0 Error: line too long"),
            (ServerError::EmptyLine, "500 5.5.2 Error: bad syntax"),
            (
                ServerError::Unrecognized,
                "500 5.5.2 Error: command not recognized",
            ),
            (
                ServerError::Syntax("STARTTLS"),
                "501 5.5.4 Syntax: STARTTLS",
            ),
            (
                ServerError::BadSender,
                "501 5.1.7 Bad sender address syntax",
            ),
            (
                ServerError::BadRecipient,
                "501 5.1.3 Bad recipient address syntax",
            ),
            (
                ServerError::UnsupportedOption("SMTPUTF8".into()),
                "555 5.5.4 Unsupported option: SMTPUTF8",
            ),
            (ServerError::BadUtf8, "500 5.5.2 Error: bad UTF-8 syntax"),
            (
                ServerError::Smtputf8Undeclared,
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            ),
            (
                ServerError::SizeExceedsLimit,
                "552 5.3.4 Message size exceeds fixed limit",
            ),
            (ServerError::NeedMail, "503 5.5.1 Error: need MAIL command"),
            (ServerError::NeedRcpt, "503 5.5.1 Error: need RCPT command"),
            (
                ServerError::TooManyRecipients,
                "452 4.5.3 Error: too many recipients",
            ),
            (
                ServerError::TlsNotImplemented,
                "502 5.5.1 Error: command not implemented",
            ),
            (
                ServerError::TlsAlreadyActive,
                "554 5.5.1 Error: TLS already active",
            ),
            (
                ServerError::TlsUnavailable,
                "454 4.7.0 TLS not available due to local problem",
            ),
            (
                ServerError::StartTlsFirst,
                "530 5.7.0 Must issue a STARTTLS command first",
            ),
            (
                ServerError::NoClientCert,
                "421 4.7.1 mx.example Error: No client certificate presented",
            ),
            (
                ServerError::UntrustedClientCert,
                "421 4.7.1 mx.example Error: Client certificate not trusted",
            ),
            (
                ServerError::TooManyErrors,
                "421 4.7.0 mx.example Error: too many errors",
            ),
            (
                ServerError::Timeout,
                "421 4.4.2 mx.example Error: timeout exceeded",
            ),
            (
                ServerError::BareNewline,
                "550 5.5.2 mx.example Error: bare <LF> received",
            ),
            (
                ServerError::MessageTooBig,
                "552 5.3.4 Error: message file too big",
            ),
            (ServerError::TooManyHops, "554 5.4.0 Error: too many hops"),
            (
                ServerError::QueueWriteError,
                "451 4.3.0 Error: queue file write error",
            ),
            (
                ServerError::InsufficientStorage,
                "452 4.3.1 Insufficient system storage",
            ),
            (
                ServerError::NonSmtpCommand,
                "221 2.7.0 Error: I can break rules, too. Goodbye.",
            ),
            (
                ServerError::Displaced,
                "421 4.7.0 mx.example Error: too many connections; closing idle session",
            ),
        ];
        for (err, want) in table {
            let reply = err.reply("mx.example");
            assert_eq!(reply.to_string(), *want);
            assert!(reply.enhanced().is_some(), "{want}: enhanced code agrees");
        }
    }
}
