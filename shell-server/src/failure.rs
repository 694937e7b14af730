//! Why a `certrelayd` command failed, as one value per failure: the words printed on
//! standard error and the exit code, both decided here, once, for `main`.
//!
//! Not here: finding the failure (each command does), the shell's own errors
//! ([`certrelay_shell::error::Error`], carried inside), or serving, which logs its own
//! failures as the relay runs.

use crate::demo::DemoError;
use crate::running::NotRunning;
use certrelay_core::cert::CertError;
use certrelay_core::config::Diagnostic;
use certrelay_core::queue::QueueId;
use certrelay_shell::error::Error;
use certrelay_shell::pki::PkiError;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// sysexits(3): the command line cannot be followed.
const EX_USAGE: i32 = 64;
/// sysexits(3): the configuration has errors.
const EX_CONFIG: i32 = 78;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// `check` could not read the configuration.
    Check(Error),
    /// `check` found errors (its report says which).
    ChecksFailed,
    /// The demo did not show what it should.
    Demo(DemoError),
    /// `enroll` could not make a code; the text says why and what to do.
    Enroll(String),
    /// main.cf could not be loaded for a setting the command needs.
    Config(Error),
    /// main.cf could not be loaded to find the fingerprint table (and no `--map` named it).
    MapConfig(Error),
    /// `relay_clientcerts` cannot be read as a list of tables.
    MapSetting(Diagnostic),
    /// The queue cannot be listed.
    Listing {
        /// `queue_directory`.
        queue_directory: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `flush` found no relay to ask.
    NoRelay(NotRunning),
    /// The running relay could not be sent `signal` (SIGHUP: to reload).
    Signal {
        /// The relay.
        pid: Pid,
        /// What was sent.
        signal: Signal,
        /// What the system said.
        source: nix::Error,
    },
    /// `delete`'s argument, as typed, is not a queue id.
    NotQueueId(String),
    /// No message has this id.
    NoSuchMessage {
        /// The id.
        id: QueueId,
        /// `queue_directory`.
        queue_directory: PathBuf,
    },
    /// Removing the message failed.
    NotRemoved {
        /// The message.
        id: QueueId,
        /// What the system said.
        source: io::Error,
    },
    /// `--digest`, as typed, names no digest.
    UnknownDigest(String),
    /// `fingerprint` was given no file.
    NoCertificateFiles,
    /// A certificate command failed.
    Pki(PkiError),
    /// The configuration had errors before a change, so nothing was changed.
    NotChanged {
        /// The configuration directory (`-c`).
        config_dir: PathBuf,
        /// What the check found; the errors among them are shown.
        diagnostics: Vec<Diagnostic>,
    },
    /// The change was written, but the configuration has errors with it.
    ChangedButInvalid(Vec<Diagnostic>),
    /// The running relay refused the new configuration.
    ReloadRefused {
        /// The relay.
        pid: Pid,
        /// Its reasons, one line each, as its report gives them.
        reasons: Vec<String>,
    },
    /// The running relay did not report loading the change in time.
    ReloadSilent {
        /// The relay.
        pid: Pid,
        /// How long its report was waited for.
        waited: Duration,
    },
    /// `explain` cannot load the configuration: what the check found (errors shown).
    ExplainConfig(Vec<Diagnostic>),
    /// No listener has `--port` (or there is no listener at all).
    NoListener(Option<u16>),
    /// `--client`, as typed, is not an IP address.
    NotAnAddress(String),
    /// `--rcpt`, as typed, is not a mail address.
    NotAMailAddress(String),
    /// `dkim keygen` failed.
    Keygen(crate::dkim::KeygenError),
    /// `--cert` cannot be used.
    CertFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: CertFileError,
    },
}

/// Why a certificate file cannot be used.
#[derive(Debug)]
pub enum CertFileError {
    /// It cannot be read.
    Read(io::Error),
    /// It holds no certificate that can be parsed.
    Parse(CertError),
}

impl fmt::Display for CertFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertFileError::Read(e) => write!(f, "{e}"),
            CertFileError::Parse(e) => write!(f, "{e}"),
        }
    }
}

impl Failure {
    /// The exit code: sysexits(3)'s 64 for a command line that cannot be followed and 78
    /// for `explain` on a configuration with errors; 1 for every other failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::NotQueueId(_)
            | Failure::UnknownDigest(_)
            | Failure::NoCertificateFiles
            | Failure::NoListener(_)
            | Failure::NotAnAddress(_)
            | Failure::NotAMailAddress(_)
            | Failure::Keygen(crate::dkim::KeygenError::BadName(_)) => EX_USAGE,
            Failure::ExplainConfig(_) => EX_CONFIG,
            _ => 1,
        }
    }

    /// False when the command's own output has said it all already.
    pub fn has_message(&self) -> bool {
        !matches!(self, Failure::ChecksFailed)
    }
}

/// Writes the errors among `diagnostics`, one a line, and then `summary` on a line of its
/// own; without `summary`, only the errors.
fn errors_then(
    f: &mut fmt::Formatter<'_>,
    diagnostics: &[Diagnostic],
    summary: Option<fmt::Arguments<'_>>,
) -> fmt::Result {
    let mut lines = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d as &dyn fmt::Display)
        .chain(summary.as_ref().map(|s| s as &dyn fmt::Display));
    if let Some(first) = lines.next() {
        write!(f, "{first}")?;
    }
    lines.try_for_each(|line| write!(f, "\n{line}"))
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Check(e) | Failure::Config(e) => write!(f, "error: {e}"),
            Failure::ChecksFailed => f.write_str("error: the check found errors"),
            Failure::Demo(e) => write!(f, "demo failed: {e}"),
            Failure::Enroll(e) => write!(f, "error: {e}"),
            Failure::Keygen(e) => write!(f, "error: {e}"),
            Failure::MapConfig(e) => write!(f, "error: {e} (or name the table with --map)"),
            Failure::MapSetting(d) => write!(f, "{d}"),
            Failure::Listing {
                queue_directory,
                source,
            } => write!(f, "error: {}: {source}", queue_directory.display()),
            Failure::NoRelay(why) => write!(
                f,
                "error: no running relay ({why}); queued mail goes when it starts"
            ),
            Failure::Signal {
                pid,
                signal,
                source,
            } => {
                let purpose = if *signal == Signal::SIGHUP {
                    " to reload"
                } else {
                    ""
                };
                write!(
                    f,
                    "error: cannot signal the running relay (pid {pid}){purpose}: {source}"
                )
            }
            Failure::NotQueueId(id) => write!(f, "error: {id:?} is not a queue id"),
            Failure::NoSuchMessage {
                id,
                queue_directory,
            } => write!(
                f,
                "error: {id}: no such message in {}",
                queue_directory.display()
            ),
            Failure::NotRemoved { id, source } => write!(f, "error: {id}: {source}"),
            Failure::UnknownDigest(digest) => write!(
                f,
                "error: --digest {digest}: use md5, sha1, sha256 or sha512"
            ),
            Failure::NoCertificateFiles => f.write_str("error: name at least one certificate file"),
            Failure::Pki(e) => write!(f, "error: {e}"),
            Failure::NotChanged {
                config_dir,
                diagnostics,
            } => {
                let dir = config_dir.display();
                errors_then(
                    f,
                    diagnostics,
                    Some(format_args!(
                        "error: {dir}: the configuration has errors (above), so a running \
                         relay would not load the change; nothing was changed. Fix them \
                         first (`certrelayd -c {dir} check`)"
                    )),
                )
            }
            Failure::ChangedButInvalid(diagnostics) => errors_then(
                f,
                diagnostics,
                Some(format_args!(
                    "error: the change is written, but the configuration now has errors \
                     (above): a running relay would refuse it and keep its old table"
                )),
            ),
            Failure::ReloadRefused { pid, reasons } => {
                for line in reasons {
                    writeln!(f, "{line}")?;
                }
                write!(
                    f,
                    "error: the running relay (pid {pid}) refused the new configuration \
                     (above) and keeps serving the old one; the change is written and applies \
                     once that is fixed and the relay reloads"
                )
            }
            Failure::ReloadSilent { pid, waited } => write!(
                f,
                "error: the running relay (pid {pid}) did not report loading the change \
                 within {} s: it may still serve the old table; look at its log",
                waited.as_secs()
            ),
            Failure::ExplainConfig(diagnostics) => errors_then(f, diagnostics, None),
            Failure::NoListener(port) => {
                write!(f, "error: no listener on port {}", port.unwrap_or(0))
            }
            Failure::NotAnAddress(client) => {
                write!(f, "error: --client {client}: not an IP address")
            }
            Failure::NotAMailAddress(rcpt) => {
                write!(f, "error: --rcpt {rcpt}: not a mail address")
            }
            Failure::CertFile { path, error } => {
                write!(f, "error: {}: {error}", path.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::config::Location;
    use std::path::Path;

    fn denied() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    fn error(line: u32) -> Diagnostic {
        Diagnostic::error(&Location::new("/etc/certrelay/main.cf", line), "bad")
    }

    fn warning(line: u32) -> Diagnostic {
        Diagnostic::warning(&Location::new("/etc/certrelay/main.cf", line), "odd")
    }

    fn id() -> QueueId {
        QueueId::parse("4F3A2B1C0D5E6G").expect("a queue id")
    }

    #[test]
    fn each_failure_has_its_words_and_code() {
        let pid = Pid::from_raw(4242);
        let read = || Error::Read {
            path: "/etc/certrelay/main.cf".into(),
            source: denied(),
        };
        let cases: Vec<(Failure, String, i32)> = vec![
            (Failure::Check(read()), format!("error: {}", read()), 1),
            (Failure::Config(read()), format!("error: {}", read()), 1),
            (
                Failure::MapConfig(read()),
                format!("error: {} (or name the table with --map)", read()),
                1,
            ),
            (Failure::MapSetting(error(3)), error(3).to_string(), 1),
            (
                Failure::Listing {
                    queue_directory: "/var/spool/certrelay".into(),
                    source: denied(),
                },
                format!("error: /var/spool/certrelay: {}", denied()),
                1,
            ),
            (
                Failure::NoRelay(NotRunning::Garbled("/q/pid".into())),
                "error: no running relay (/q/pid: not a process id); queued mail goes when \
                 it starts"
                    .into(),
                1,
            ),
            (
                Failure::Signal {
                    pid,
                    signal: Signal::SIGUSR1,
                    source: nix::Error::EPERM,
                },
                format!(
                    "error: cannot signal the running relay (pid 4242): {}",
                    nix::Error::EPERM
                ),
                1,
            ),
            (
                Failure::Signal {
                    pid,
                    signal: Signal::SIGHUP,
                    source: nix::Error::ESRCH,
                },
                format!(
                    "error: cannot signal the running relay (pid 4242) to reload: {}",
                    nix::Error::ESRCH
                ),
                1,
            ),
            (
                Failure::NotQueueId("../etc".into()),
                "error: \"../etc\" is not a queue id".into(),
                64,
            ),
            (
                Failure::NoSuchMessage {
                    id: id(),
                    queue_directory: "/q".into(),
                },
                "error: 4F3A2B1C0D5E6G: no such message in /q".into(),
                1,
            ),
            (
                Failure::NotRemoved {
                    id: id(),
                    source: denied(),
                },
                format!("error: 4F3A2B1C0D5E6G: {}", denied()),
                1,
            ),
            (
                Failure::UnknownDigest("sha3".into()),
                "error: --digest sha3: use md5, sha1, sha256 or sha512".into(),
                64,
            ),
            (
                Failure::NoCertificateFiles,
                "error: name at least one certificate file".into(),
                64,
            ),
            (
                Failure::ReloadSilent {
                    pid,
                    waited: Duration::from_secs(5),
                },
                "error: the running relay (pid 4242) did not report loading the change \
                 within 5 s: it may still serve the old table; look at its log"
                    .into(),
                1,
            ),
            (
                Failure::NoListener(Some(2525)),
                "error: no listener on port 2525".into(),
                64,
            ),
            (
                Failure::NoListener(None),
                "error: no listener on port 0".into(),
                64,
            ),
            (
                Failure::NotAnAddress("relay.example".into()),
                "error: --client relay.example: not an IP address".into(),
                64,
            ),
            (
                Failure::NotAMailAddress("a b".into()),
                "error: --rcpt a b: not a mail address".into(),
                64,
            ),
            (
                Failure::CertFile {
                    path: "/tmp/laptop.pem".into(),
                    error: CertFileError::Read(denied()),
                },
                format!("error: /tmp/laptop.pem: {}", denied()),
                1,
            ),
            (
                Failure::CertFile {
                    path: "/tmp/laptop.pem".into(),
                    error: CertFileError::Parse(CertError::NotPemOrDer),
                },
                "error: /tmp/laptop.pem: neither PEM text nor DER data".into(),
                1,
            ),
        ];
        for (failure, words, code) in cases {
            assert_eq!(failure.to_string(), words, "{failure:?}");
            assert_eq!(failure.exit_code(), code, "{failure:?}");
            assert!(failure.has_message());
        }
    }

    #[test]
    fn a_refused_change_shows_the_errors_then_the_summary() {
        let diagnostics = vec![warning(1), error(2), error(7)];
        let not_changed = Failure::NotChanged {
            config_dir: "/etc/certrelay".into(),
            diagnostics: diagnostics.clone(),
        };
        assert_eq!(
            not_changed.to_string(),
            format!(
                "{}\n{}\nerror: /etc/certrelay: the configuration has errors (above), so a \
                 running relay would not load the change; nothing was changed. Fix them \
                 first (`certrelayd -c /etc/certrelay check`)",
                error(2),
                error(7)
            )
        );
        assert_eq!(not_changed.exit_code(), 1);
        let invalid = Failure::ChangedButInvalid(diagnostics);
        assert_eq!(
            invalid.to_string(),
            format!(
                "{}\n{}\nerror: the change is written, but the configuration now has errors \
                 (above): a running relay would refuse it and keep its old table",
                error(2),
                error(7)
            )
        );
        assert_eq!(invalid.exit_code(), 1);
    }

    #[test]
    fn a_refused_reload_shows_the_relays_reasons_then_the_summary() {
        let refused = Failure::ReloadRefused {
            pid: Pid::from_raw(7),
            reasons: vec!["main.cf:3: bad".into(), "main.cf:9: worse".into()],
        };
        assert_eq!(
            refused.to_string(),
            "main.cf:3: bad\nmain.cf:9: worse\nerror: the running relay (pid 7) refused the \
             new configuration (above) and keeps serving the old one; the change is written \
             and applies once that is fixed and the relay reloads"
        );
        assert_eq!(refused.exit_code(), 1);
    }

    #[test]
    fn explain_on_a_broken_configuration_shows_its_errors_and_exits_78() {
        let failure = Failure::ExplainConfig(vec![error(1), warning(2), error(4)]);
        assert_eq!(failure.to_string(), format!("{}\n{}", error(1), error(4)));
        assert_eq!(failure.exit_code(), 78);
    }

    #[test]
    fn a_failed_check_adds_nothing_to_its_report() {
        assert!(!Failure::ChecksFailed.has_message());
        assert_eq!(Failure::ChecksFailed.exit_code(), 1);
        let path = Path::new("/x/main.cf");
        let unreadable = Failure::Check(Error::Read {
            path: path.into(),
            source: denied(),
        });
        assert!(unreadable.has_message());
    }
}
