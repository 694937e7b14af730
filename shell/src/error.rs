//! The shells' error: why a program could not start or a command could not be done, with
//! where (a configuration file's line from the core's [`Diagnostic`], or the path of the file
//! or the listener concerned), kept typed until a binary's `main` prints it once.
//!
//! Not here: protocol failures (the core's errors, SMTP replies), certificate commands
//! (their own [`crate::pki::PkiError`]), or exit codes, which each binary picks at its edge.

use certrelay_core::config::Diagnostic;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why something the shell was asked to do failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// Problems found in the configuration, each with its file:line; one per line when
    /// printed.
    Config(Vec<Diagnostic>),
    /// A configuration file that exists (or must) could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A directory or resource of the system could not be used.
    Io {
        /// What was being done, as in "cannot {action}" (`use the maildrop in`, ...).
        action: &'static str,
        /// The file or directory, when there is one.
        path: Option<PathBuf>,
        /// What the system said.
        source: io::Error,
    },
    /// A listening socket could not be opened.
    Listen {
        /// The listener's key (its master.cf service, or the implicit one's name).
        listener: String,
        /// The address, when binding it was what failed.
        addr: Option<SocketAddr>,
        /// What the system said.
        source: io::Error,
    },
    /// A host name to listen on has no address.
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said; `None` when it answered with no address.
        source: Option<io::Error>,
    },
    /// `inet_interfaces` and `inet_protocols` together leave no address to listen on.
    NoInterface {
        /// `inet_interfaces`, as a list.
        interfaces: Vec<String>,
        /// `inet_protocols`, as a list.
        protocols: Vec<String>,
    },
    /// Several failures, each harmless alone, that together leave nothing working.
    All(Vec<Error>),
}

impl Error {
    /// A failure to `action` (as in "cannot {action}") on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            action,
            path: Some(path.into()),
            source,
        }
    }

    /// A failure to `action` with no file concerned (a thread, a signal watch).
    pub fn system(action: &'static str, source: io::Error) -> Error {
        Error::Io {
            action,
            path: None,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(diagnostics) => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
            Error::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            Error::Io {
                action,
                path: Some(path),
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            Error::Io {
                action,
                path: None,
                source,
            } => write!(f, "cannot {action}: {source}"),
            Error::Listen {
                listener,
                addr: Some(addr),
                source,
            } => write!(f, "listener {listener}: cannot listen on {addr}: {source}"),
            Error::Listen {
                listener,
                addr: None,
                source,
            } => write!(f, "listener {listener}: {source}"),
            Error::Resolve {
                host,
                source: Some(source),
            } => write!(f, "cannot find the address of {host}: {source}"),
            Error::Resolve { host, source: None } => write!(f, "{host} has no address"),
            Error::NoInterface {
                interfaces,
                protocols,
            } => write!(
                f,
                "inet_interfaces = {} leaves no address for inet_protocols = {}",
                interfaces.join(", "),
                protocols.join(", ")
            ),
            Error::All(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. }
            | Error::Io { source, .. }
            | Error::Listen { source, .. } => Some(source),
            Error::Resolve {
                source: Some(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::config::Location;

    fn denied() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    #[test]
    fn each_kind_says_what_and_where() {
        let diag = |line| Diagnostic::error(&Location::new("/etc/certrelay/main.cf", line), "bad");
        let cases: Vec<(Error, String)> = vec![
            (
                Error::Config(vec![diag(2), diag(5)]),
                format!("{}\n{}", diag(2), diag(5)),
            ),
            (
                Error::Read {
                    path: "/x/main.cf".into(),
                    source: denied(),
                },
                format!("/x/main.cf: cannot read: {}", denied()),
            ),
            (
                Error::io("use the maildrop in", "/q", denied()),
                format!("cannot use the maildrop in /q: {}", denied()),
            ),
            (
                Error::system("watch signals", denied()),
                format!("cannot watch signals: {}", denied()),
            ),
            (
                Error::Listen {
                    listener: "smtp".into(),
                    addr: Some("127.0.0.1:25".parse().unwrap()),
                    source: denied(),
                },
                format!("listener smtp: cannot listen on 127.0.0.1:25: {}", denied()),
            ),
            (
                Error::Resolve {
                    host: "nowhere.test".into(),
                    source: None,
                },
                "nowhere.test has no address".into(),
            ),
            (
                Error::NoInterface {
                    interfaces: vec!["192.0.2.1".into(), "loopback-only".into()],
                    protocols: vec!["ipv6".into()],
                },
                "inet_interfaces = 192.0.2.1, loopback-only leaves no address for \
                 inet_protocols = ipv6"
                    .into(),
            ),
            (
                Error::All(vec![
                    Error::system("a", denied()),
                    Error::system("b", denied()),
                ]),
                format!("cannot a: {0}; cannot b: {0}", denied()),
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }
}
