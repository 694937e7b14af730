//! Why a `certrelay` command (or `sendmail`, `mailq`) failed, as one value per failure: the
//! words printed on standard error and the exit code, both decided here, once, for `main`.
//!
//! Not here: finding the failure (each command does) or the shell's own errors
//! ([`certrelay_shell::error::Error`], carried inside).

use crate::probe::ProbeError;
use crate::sendmail::{exit, SubmitError, UsageError, USAGE};
use certrelay_shell::error::Error;
use certrelay_shell::pki::PkiError;
use std::fmt;
use std::io;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The command line cannot be followed: what is wrong with it.
    Usage(String),
    /// sendmail's options cannot be followed.
    SendmailUsage(UsageError),
    /// The configuration, or a file it names, cannot be used.
    Config(Error),
    /// `sendmail -bs` could not start.
    SmtpStdio(Error),
    /// The message was not queued.
    Submit(SubmitError),
    /// The queue directory cannot be used for delivery.
    QueueDir(Error),
    /// The queue cannot be listed.
    Listing(Error),
    /// A queue run failed.
    QueueRun(io::Error),
    /// Messages `delete` did not remove: each id and why, in the order asked.
    NotDeleted(Vec<(String, NotDeleted)>),
    /// Something the process needs from the system (a signal watch, a thread).
    System(Error),
    /// A certificate command failed.
    Pki(PkiError),
    /// `enroll` or `renew` did not get a certificate: what happened.
    Enroll(String),
    /// `probe` could not find out.
    Probe {
        /// HOST:PORT as given.
        target: String,
        /// Where it stopped.
        error: ProbeError,
    },
    /// `check` could not read main.cf.
    Check(Error),
    /// `check` found errors (its report says which).
    ChecksFailed,
    /// `probe` found that this laptop would not deliver there (its report says why).
    WouldNotDeliver,
}

/// Why `delete` did not remove one message.
#[derive(Debug)]
pub enum NotDeleted {
    /// No message has that id.
    NotFound,
    /// A queue run held the queue past the wait.
    Busy,
    /// Removing it failed.
    Io(io::Error),
}

impl Failure {
    /// What `probe TARGET` ended with: nothing when this laptop would deliver there.
    pub fn of_probe(target: String, result: Result<bool, ProbeError>) -> Result<(), Failure> {
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::WouldNotDeliver),
            Err(error) => Err(Failure::Probe { target, error }),
        }
    }

    /// The exit code: sysexits(3) as sendmail uses them; 1 for a check or certificate
    /// command that failed and for a message `delete` did not find; 2 when `probe` failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) | Failure::SendmailUsage(_) => exit::USAGE,
            Failure::Config(_) | Failure::SmtpStdio(_) => exit::CONFIG,
            Failure::Submit(e) => e.exit_code(),
            Failure::QueueDir(_) => exit::CANTCREAT,
            Failure::Listing(_) | Failure::QueueRun(_) => exit::TEMPFAIL,
            // The last failure decides, as each one replaced the code before it.
            Failure::NotDeleted(list) => match list.last() {
                Some((_, NotDeleted::NotFound)) => 1,
                Some(_) => exit::TEMPFAIL,
                None => 0,
            },
            Failure::System(_) => exit::SOFTWARE,
            Failure::Pki(_) | Failure::Check(_) | Failure::Enroll(_) => 1,
            Failure::ChecksFailed | Failure::WouldNotDeliver => 1,
            Failure::Probe { .. } => 2,
        }
    }

    /// False when the command's own output has said it all already.
    pub fn has_message(&self) -> bool {
        !matches!(self, Failure::ChecksFailed | Failure::WouldNotDeliver)
    }
}

/// Writes `error` with `prefix` before each of its lines (a configuration error is one
/// diagnostic per line).
fn prefixed(f: &mut fmt::Formatter<'_>, prefix: &str, error: &impl fmt::Display) -> fmt::Result {
    let text = error.to_string();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        write!(f, "{prefix}: {line}")?;
    }
    Ok(())
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(msg) => write!(f, "certrelay: {msg}\nTry certrelay --help."),
            Failure::SendmailUsage(e) => write!(f, "sendmail: {e}\n{USAGE}"),
            Failure::Config(e) | Failure::System(e) => prefixed(f, "certrelay", e),
            Failure::SmtpStdio(e) => prefixed(f, "sendmail", e),
            Failure::Submit(e) => write!(f, "sendmail: {e}"),
            Failure::QueueDir(e) | Failure::Listing(e) => write!(f, "certrelay: {e}"),
            Failure::QueueRun(e) => write!(f, "certrelay: queue run failed: {e}"),
            Failure::NotDeleted(list) => {
                for (i, (id, why)) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    match why {
                        NotDeleted::NotFound => {
                            write!(f, "certrelay: {id}: no such message in the queue")
                        }
                        NotDeleted::Busy => {
                            write!(f, "certrelay: {id}: a queue run is in progress; try again")
                        }
                        NotDeleted::Io(e) => write!(f, "certrelay: {id}: cannot remove: {e}"),
                    }?;
                }
                Ok(())
            }
            Failure::Pki(e) => write!(f, "certrelay: {e}"),
            Failure::Enroll(e) => write!(f, "certrelay: {e}"),
            Failure::Probe { target, error } => write!(f, "certrelay: probe {target}: {error}"),
            Failure::Check(e) => write!(f, "error: {e}"),
            Failure::ChecksFailed => f.write_str("certrelay: the check found errors"),
            Failure::WouldNotDeliver => {
                f.write_str("certrelay: this laptop would not deliver there")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::config::{Diagnostic, Location};

    #[test]
    fn a_configuration_error_is_one_prefixed_line_per_diagnostic() {
        let d = |line| Diagnostic::error(&Location::new("main.cf", line), "bad");
        let failure = Failure::Config(Error::Config(vec![d(1), d(4)]));
        assert_eq!(
            failure.to_string(),
            format!("certrelay: {}\ncertrelay: {}", d(1), d(4))
        );
        assert_eq!(failure.exit_code(), exit::CONFIG);
    }

    #[test]
    fn delete_ends_with_the_code_of_its_last_failure() {
        let busy = Failure::NotDeleted(vec![
            ("A".into(), NotDeleted::NotFound),
            ("B".into(), NotDeleted::Busy),
        ]);
        assert_eq!(busy.exit_code(), exit::TEMPFAIL);
        assert_eq!(
            busy.to_string(),
            "certrelay: A: no such message in the queue\n\
             certrelay: B: a queue run is in progress; try again"
        );
        let gone = Failure::NotDeleted(vec![
            ("B".into(), NotDeleted::Busy),
            ("A".into(), NotDeleted::NotFound),
        ]);
        assert_eq!(gone.exit_code(), 1);
    }

    #[test]
    fn outcomes_already_reported_print_nothing_more() {
        assert!(!Failure::ChecksFailed.has_message());
        assert!(!Failure::WouldNotDeliver.has_message());
        assert!(Failure::Usage("x".into()).has_message());
    }
}
