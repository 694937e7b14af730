//! What can go wrong in the certificate commands, worded for the person who ran them.
//!
//! Not here: the checks that produce these errors (the commands and [`super::names`]).

use certrelay_core::fingerprint::FingerprintError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a certificate command failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum PkiError {
    /// Reading or writing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`read`, `create`, ...).
        action: &'static str,
        /// What the system said.
        err: io::Error,
    },
    /// A file given as a certificate holds none.
    NotCertificate {
        /// The file.
        path: PathBuf,
        /// What it holds instead.
        found: String,
    },
    /// A file to be written exists already; nothing is overwritten.
    Exists(PathBuf),
    /// A name or label that cannot be used.
    BadName {
        /// The name as given.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A fingerprint text that does not parse.
    BadFingerprint {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        err: FingerprintError,
    },
    /// The table already has this fingerprint or name.
    Duplicate {
        /// The table file.
        path: PathBuf,
        /// The line of the existing entry, from 1.
        line: usize,
        /// What is duplicated, for the message (`fingerprint ...`, `name "..."`).
        what: String,
    },
    /// A renewal for a label under which the table lists another laptop's certificate (one
    /// no renewal links to the asking one): listing it would unlist that one.
    SharedLabel {
        /// The table file.
        path: PathBuf,
        /// The line of the other certificate's entry, from 1.
        line: usize,
        /// The label.
        label: String,
    },
    /// Nothing in the table matches what was to be removed.
    NotListed {
        /// The table file.
        path: PathBuf,
        /// The name or fingerprint asked for.
        wanted: String,
    },
    /// A key, CA or request file that cannot be used.
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen refused to make a key, certificate or request.
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's reason.
        reason: String,
    },
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkiError::Io { path, action, err } => {
                write!(f, "cannot {action} {}: {err}", path.display())
            }
            PkiError::NotCertificate { path, found } => {
                write!(f, "{}: {found}", path.display())
            }
            PkiError::Exists(path) => write!(
                f,
                "{} exists already; not overwriting it (move it away first)",
                path.display()
            ),
            PkiError::BadName { name, reason } => write!(f, "name {name:?}: {reason}"),
            PkiError::BadFingerprint { text, err } => {
                write!(f, "{text:?} is not a fingerprint: {err}")
            }
            PkiError::Duplicate { path, line, what } => write!(
                f,
                "{}:{line}: {what} is listed already; nothing changed",
                path.display()
            ),
            PkiError::SharedLabel { path, line, label } => write!(
                f,
                "{}:{line}: the label {label:?} names another laptop's certificate too; a \
                 renewal would unlist it, so none is made (give each laptop a label of its own)",
                path.display()
            ),
            PkiError::NotListed { path, wanted } => write!(
                f,
                "{}: no entry has the name or fingerprint {wanted:?}; nothing changed",
                path.display()
            ),
            PkiError::BadInput { path, reason } => write!(f, "{}: {reason}", path.display()),
            PkiError::Generate { what, reason } => write!(f, "cannot make {what}: {reason}"),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PkiError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}
