//! The names the certificate commands accept: table labels, and names that become a
//! certificate's CN and a file name. Nothing is read or written here.

use super::error::PkiError;

/// A label for a table entry: one line of printable text.
pub fn check_label(label: &str) -> Result<(), PkiError> {
    let reason = if label.trim().is_empty() {
        "a table entry needs a non-empty name"
    } else if label.chars().any(char::is_control) {
        "control characters or line breaks cannot be part of a table entry"
    } else {
        return Ok(());
    };
    Err(PkiError::BadName {
        name: label.to_string(),
        reason,
    })
}

/// A name that becomes a certificate's CN, a table label and a file name.
pub fn check_file_name(name: &str) -> Result<(), PkiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@');
    let reason = if name.is_empty() {
        "empty"
    } else if name.starts_with(['.', '-']) {
        "it must not start with '.' or '-' (it becomes a file name)"
    } else if !name.chars().all(allowed) {
        "use letters, digits and . - _ @ only (it becomes a file name and a table entry)"
    } else if name.len() > 64 {
        "longer than 64 characters, the most a certificate CN may hold"
    } else {
        return Ok(());
    };
    Err(PkiError::BadName {
        name: name.to_string(),
        reason,
    })
}
