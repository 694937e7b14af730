//! Messages about configuration text, each tied to a file and line: `main.cf`, `master.cf`,
//! lookup tables and fingerprint maps all report through [`Diagnostic`].
//!
//! Not here: reading any of those files, or deciding what a message means for start-up (the
//! shell prints them and refuses to start on an error).

use alloc::string::String;
use core::fmt;

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth a line in the start-up log; nothing is wrong.
    Notice,
    /// Something was ignored or guessed; the program can still run.
    Warning,
    /// The program must not start with this configuration.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// Where a setting was written: a file name as the shell gave it, and a line number.
///
/// Line 0 means "no particular line" (a built-in default, or a value given by the shell).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file name (or another source name, such as `command line`).
    pub file: String,
    /// The 1-based line number of the first line of the setting, or 0.
    pub line: u32,
}

impl Location {
    /// A location in `file` at `line`.
    pub fn new(file: &str, line: u32) -> Self {
        Location {
            file: String::from(file),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// One message about a configuration file: `file:line: error: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error, warning or notice.
    pub severity: Severity,
    /// The file it concerns.
    pub file: String,
    /// The line it concerns (0: the file as a whole).
    pub line: u32,
    /// What was wrong, and where useful what to do.
    pub message: String,
}

impl Diagnostic {
    /// An error at `at`.
    pub fn error(at: &Location, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, at, message)
    }

    /// A warning at `at`.
    pub fn warning(at: &Location, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, at, message)
    }

    /// A notice at `at`.
    pub fn notice(at: &Location, message: impl Into<String>) -> Self {
        Self::new(Severity::Notice, at, message)
    }

    /// A diagnostic of any severity at `at`.
    pub fn new(severity: Severity, at: &Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: at.file.clone(),
            line: at.line,
            message: message.into(),
        }
    }

    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The file and line as a [`Location`].
    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.location(),
            self.severity,
            self.message
        )
    }
}

/// True when any diagnostic in `diagnostics` is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_shapes() {
        let cases = [
            (
                Diagnostic::error(&Location::new("main.cf", 12), "bad"),
                "main.cf:12: error: bad",
            ),
            (
                Diagnostic::warning(&Location::new("/etc/certrelay/main.cf", 3), "odd"),
                "/etc/certrelay/main.cf:3: warning: odd",
            ),
            (
                Diagnostic::notice(&Location::new("master.cf", 0), "fyi"),
                "master.cf: notice: fyi",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(d.to_string(), want);
        }
    }

    #[test]
    fn errors_are_found() {
        let at = Location::new("f", 1);
        assert!(!has_errors(&[Diagnostic::warning(&at, "w")]));
        assert!(has_errors(&[
            Diagnostic::warning(&at, "w"),
            Diagnostic::error(&at, "e")
        ]));
    }
}
