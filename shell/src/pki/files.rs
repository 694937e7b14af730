//! File handling for the certificate commands: never overwrite a key or certificate, keep keys
//! private, and replace tables so that a reader sees the old text or the new, never half.

use super::error::PkiError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private keys (and of files holding one).
pub const PRIVATE: u32 = 0o600;
/// Mode of certificates.
pub const PUBLIC: u32 = 0o644;

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |err| PkiError::Io {
        path: path.to_path_buf(),
        action,
        err,
    }
}

/// The bytes of `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(io_error(path, "read"))
}

/// The text of `path`, or an empty text when it does not exist yet.
pub fn read_text_or_empty(path: &Path) -> Result<String, PkiError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| PkiError::BadInput {
            path: path.to_path_buf(),
            reason: String::from("not UTF-8 text; a table is a text file"),
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(io_error(path, "read")(err)),
    }
}

/// `dir` made absolute (created first if missing), so that printed configuration lines work
/// from any working directory.
pub fn absolute_dir(dir: &Path) -> Result<PathBuf, PkiError> {
    fs::create_dir_all(dir).map_err(io_error(dir, "create directory"))?;
    fs::canonicalize(dir).map_err(io_error(dir, "resolve"))
}

/// Refuses when any of `paths` exists, before anything is written: a command either writes
/// all its files or none.
pub fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    match paths.iter().find(|path| path.symlink_metadata().is_ok()) {
        Some(path) => Err(PkiError::Exists(path.to_path_buf())),
        None => Ok(()),
    }
}

/// Writes a new file with `mode`, failing if it exists; the data is on disk on return.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => PkiError::Exists(path.to_path_buf()),
            _ => io_error(path, "create")(err),
        })?;
    // The umask may have narrowed the mode; a certificate must stay readable.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(path, "set the mode of"))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path, "write"))
}

/// Replaces `path` with `text`: a temporary file beside it, flushed to disk, renamed over it,
/// then the directory flushed. An existing file's mode is kept.
pub fn replace(path: &Path, text: &str) -> Result<(), PkiError> {
    replace_with_mode(path, text, None)
}

/// [`replace`], with `mode` when given (a key file is 0600 whatever it was), else the
/// existing file's mode ([`PUBLIC`] for a new file).
pub fn replace_with_mode(path: &Path, text: &str, mode: Option<u32>) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| PkiError::BadInput {
            path: path.to_path_buf(),
            reason: String::from("names a directory, not a table file"),
        })?;
    let mode = match (mode, fs::metadata(path)) {
        (Some(mode), _) => mode,
        (None, Ok(meta)) => meta.permissions().mode() & 0o7777,
        (None, Err(_)) => PUBLIC,
    };
    let tmp = dir.join(format!(".{file_name}.certrelay-{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = write_new(&tmp, text.as_bytes(), mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(io_error(path, "replace")));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "flush directory"))
}

/// DER as PEM text under `label` (`CERTIFICATE`, `PRIVATE KEY`), 64 characters a line.
pub fn pem_text(label: &str, der: &[u8]) -> String {
    let b64 = certrelay_core::dkim::base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "certrelay-pki-files-{label}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_new_sets_mode_and_never_overwrites() {
        let dir = scratch("new");
        let key = dir.join("k");
        write_new(&key, b"secret", PRIVATE).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = write_new(&key, b"other", PRIVATE).unwrap_err();
        assert!(matches!(again, PkiError::Exists(_)), "{again}");
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        assert!(refuse_existing(&[&dir.join("absent"), &key]).is_err());
        assert!(refuse_existing(&[&dir.join("absent")]).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replace_keeps_mode_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let table = dir.join("relay_clientcerts");
        replace(&table, "a b\n").unwrap();
        assert_eq!(fs::read_to_string(&table).unwrap(), "a b\n");
        fs::set_permissions(&table, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&table, "c d\n").unwrap();
        assert_eq!(fs::read_to_string(&table).unwrap(), "c d\n");
        let mode = fs::metadata(&table).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["relay_clientcerts"]);
        // A mode given wins over the one kept.
        replace_with_mode(&table, "e f\n", Some(PRIVATE)).unwrap();
        let mode = fs::metadata(&table).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&table).unwrap(), "e f\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_text_reads_back() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = pem_text("CERTIFICATE", &der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body, certrelay_core::dkim::base64(&der));
        assert_eq!(pem.lines().count(), 2 + 136usize.div_ceil(64));
    }
}
