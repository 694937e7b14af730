//! Certificates without openssl: fingerprints, a small private CA, laptop keys, and edits of
//! the `relay_clientcerts` table.
//!
//! What this module does not do: reload a running relay (the caller signals it when a table
//! edit reports a change), encrypt keys (Postfix wants them unencrypted, so they are written
//! mode 0600 instead), revoke certificates by CRL (revoking here means removing the
//! fingerprint from the table, which is what the relay checks), or export PKCS#12.
//!
//! Each command is a library function taking plain arguments and returning the text to print,
//! so the command lines stay thin; the intended command line is in each doc comment.

mod ca;
pub mod enroll;
pub mod enrolled;
mod error;
mod files;
mod map;
mod names;
pub mod seen;

pub use ca::{
    ca_init, ca_issue, ca_renew_server, ca_sign, keygen, CaFiles, IssuedClient, KeygenFiles,
    RenewedServer, ISSUED_DIR,
};
pub use error::PkiError;
pub use files::{pem_text, replace_with_mode, PRIVATE, PUBLIC};
pub use map::{allow, listed, revoke, Listed, MapEdit};
use names::check_label;

use certrelay_core::cert::{parse_certificates, spki_der, subject_cn, CertError};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use std::path::{Path, PathBuf};

/// Fingerprints of every certificate in `files` (PEM with one or more certificates, or one
/// DER certificate), in file order.
///
/// Command line: `certrelay fingerprint [--digest md5|sha1|sha256|sha512] [--pubkey]
/// [--map-line LABEL] FILE...` (the caller parses the digest with
/// [`DigestKind::from_config_name`]; sha256 is the sensible default).
///
/// Each line is what `openssl x509 -noout -fingerprint -<digest> -in FILE` (OpenSSL 3) prints,
/// e.g. `sha256 Fingerprint=C8:18:...`. With `pubkey` the digest is of the public key (DER
/// SubjectPublicKeyInfo) and the line says so: `sha256 Public Key Fingerprint=...`. With a
/// `map_line_label` each line is a `relay_clientcerts` entry, `<fingerprint> <label>`. When
/// there is more than one certificate, each line follows a `#` comment naming the file, the
/// certificate's place in it and its subject CN (a comment, so the output can be pasted into
/// the table as it is).
pub fn fingerprint(
    files: &[PathBuf],
    digest: DigestKind,
    pubkey: bool,
    map_line_label: Option<&str>,
) -> Result<String, PkiError> {
    if let Some(label) = map_line_label {
        check_label(label)?;
    }
    let mut found = Vec::new();
    for path in files {
        let certs = read_certificates(path)?;
        let count = certs.len();
        for (index, der) in certs.into_iter().enumerate() {
            found.push((path, index + 1, count, der));
        }
    }
    let mut out = String::new();
    let several = found.len() > 1;
    for (path, number, count, der) in &found {
        if several {
            let cn = subject_cn(der).unwrap_or_else(|| String::from("no CN"));
            out.push_str(&format!(
                "# {}: certificate {number} of {count}, CN={cn}\n",
                path.display()
            ));
        }
        let data: &[u8] = if pubkey {
            spki_der(der).ok_or_else(|| PkiError::NotCertificate {
                path: (*path).clone(),
                found: format!("certificate {number} has no readable public key"),
            })?
        } else {
            der
        };
        let print = Fingerprint::of(digest, data);
        let line = match map_line_label {
            Some(label) => print.relay_clientcerts_line(label.trim()),
            None => fingerprint_line(digest, pubkey, &print),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// `sha256 Fingerprint=AB:...`, OpenSSL 3's spelling (lower-case digest name).
fn fingerprint_line(digest: DigestKind, pubkey: bool, print: &Fingerprint) -> String {
    let what = if pubkey { " Public Key" } else { "" };
    format!("{}{what} Fingerprint={print}", digest.config_name())
}

/// The certificates of a file, or an error that names the file and says what it holds.
fn read_certificates(
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, PkiError> {
    let data = files::read(path)?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(PkiError::NotCertificate {
            path: path.to_path_buf(),
            found: String::from("empty file, no certificate in it"),
        });
    }
    parse_certificates(&data).map_err(|err| PkiError::NotCertificate {
        path: path.to_path_buf(),
        found: describe_cert_error(&err),
    })
}

fn describe_cert_error(err: &CertError) -> String {
    match err {
        CertError::NotPemOrDer => String::from("neither PEM text nor a DER certificate"),
        CertError::NoCertificate { found: None } => {
            String::from("PEM text with no certificate in it")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
