//! `certrelayd enroll NAME`: a one-time code for a laptop (written hashed beside the spool,
//! owned by `mail_owner`), and `revoke` in both tables.
//!
//! Not here: the running relay's side ([`crate::enroll`]).

use crate::enroll::{ca_key_path, enabled, enrolled_map, unix_now, CA_CERT, CA_KEY, LIFETIME};
use crate::failure::Failure;
use argh::FromArgs;
use certrelay_core::config::Config;
use certrelay_core::enroll::{Code, Secret};
use certrelay_shell::pki::enroll::EnrollCa;
use certrelay_shell::pki::enrolled;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// make a one-time code that pairs laptop NAME with this relay; prints the code alone on
/// the first line, then the command to run on the laptop
#[derive(FromArgs)]
#[argh(subcommand, name = "enroll")]
pub struct EnrollCmd {
    /// the laptop's name: its certificate's CN and its label in the enrolled table
    #[argh(positional)]
    name: String,
    /// how long the code stays usable (default 15m; units s, m, h, d)
    #[argh(option, default = "String::from(\"15m\")")]
    valid: String,
    /// the certificate's lifetime (default: certrelay_enroll_cert_lifetime)
    #[argh(option)]
    cert_valid: Option<String>,
}

fn parse_duration(text: &str, what: &str) -> Result<Duration, Failure> {
    certrelay_core::config::values::parse_time(
        text,
        certrelay_core::config::values::TimeUnit::Second,
    )
    .filter(|d| !d.is_zero())
    .ok_or_else(|| {
        Failure::Enroll(format!(
            "{what} {text:?}: expected a time, a number with a unit s, m, h, d or w"
        ))
    })
}

fn random<const N: usize>() -> Result<[u8; N], Failure> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Failure::Enroll(format!("no random numbers from the system: {e}")))?;
    Ok(bytes)
}

/// `certrelayd enroll NAME`.
pub fn enroll(config_dir: &Path, cmd: EnrollCmd) -> Result<(), Failure> {
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::Config)?;
    let config = &loaded.config;
    if !enabled(config) {
        return Err(Failure::Enroll(format!(
            "enrollment is off: set {CA_CERT} and {CA_KEY} in {} to the CA of `certrelayd ca \
             init` (ca.pem and ca.key), restart the relay, and run this again",
            config_dir.join("main.cf").display()
        )));
    }
    let valid = parse_duration(&cmd.valid, "--valid")?;
    let lifetime = match &cmd.cert_valid {
        Some(text) => parse_duration(text, "--cert-valid")?,
        None => config
            .time(LIFETIME)
            .map_err(|d| Failure::Enroll(d.to_string()))?,
    };
    EnrollCa::load(
        &PathBuf::from(config.text(CA_CERT).trim()),
        &ca_key_path(config),
    )
    .map_err(|e| Failure::Enroll(format!("cannot enroll laptops: {e}")))?;
    let name = cmd.name.trim();
    if let Some(table) = listing_name(config, name) {
        return Err(Failure::Enroll(format!(
            "{name:?} is listed already in {}: revoke it first (`certrelayd revoke {name}`) or \
             choose another name",
            table.display()
        )));
    }
    let relay_cert = certrelay_shell::conf::read_chain(config, "smtpd_tls_cert_file")
        .map_err(|d| Failure::Enroll(format!("the relay's certificate: {d}")))?;
    let leaf = relay_cert
        .first()
        .ok_or_else(|| Failure::Enroll(String::from("smtpd_tls_cert_file holds no certificate")))?;
    let queue_directory = PathBuf::from(config.text("queue_directory"));
    if !queue_directory.is_dir() {
        return Err(Failure::Enroll(format!(
            "{}: no queue directory yet; start the relay once, then enroll",
            queue_directory.display()
        )));
    }
    let owner = if crate::privilege::is_root() {
        let user = crate::privilege::mail_owner(config.text("mail_owner"))
            .map_err(|e| Failure::Enroll(format!("mail_owner: {e}")))?;
        Some((user.uid.as_raw(), user.gid.as_raw()))
    } else {
        None
    };
    let secret: [u8; 5] = random()?;
    let expires = unix_now().saturating_add(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX));
    certrelay_shell::pki::enrolled::write_code(&enrolled::NewCode {
        queue_directory: &queue_directory,
        id: random()?,
        salt: random()?,
        secret,
        name,
        expires,
        lifetime: lifetime.as_secs(),
        owner,
    })
    .map_err(|e| Failure::Enroll(e.to_string()))?;
    let code = Code::new(leaf, Secret::from_bytes(secret));
    let host = config.text("myhostname");
    let port = laptop_port(config_dir).map_or_else(String::new, |p| format!(":{p}"));
    println!("{code}");
    println!(
        "On the laptop, within {}: certrelay -c /etc/certrelay enroll {host}{port} {code}",
        cmd.valid
    );
    println!(
        "It pins this relay's certificate with the code, gets a certificate for {name:?} valid \
         for {}s, and is listed in {}.",
        lifetime.as_secs(),
        enrolled::enrolled_map(&queue_directory).display()
    );
    log::info!("enroll: code made for {name}, usable until {expires}");
    Ok(())
}

/// The table that lists `name` already, if one does.
fn listing_name(config: &Config, name: &str) -> Option<PathBuf> {
    let mut tables: Vec<PathBuf> = config
        .tables("relay_clientcerts")
        .unwrap_or_default()
        .into_iter()
        .map(|spec| PathBuf::from(spec.path))
        .collect();
    tables.push(enrolled_map(config));
    tables.into_iter().find(|table| {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        enrolled::entries(&text)
            .iter()
            .any(|(_, label)| label == name)
    })
}

/// The port of the first listener a laptop can reach with STARTTLS or in wrapper mode.
fn laptop_port(config_dir: &Path) -> Option<u16> {
    let (generation, _) = crate::generation::load(config_dir).ok()?;
    generation
        .listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.endpoint.port)
}

/// The enrolled table of the configuration in `config_dir`, when it exists.
pub fn enrolled_table(config_dir: &Path) -> Option<PathBuf> {
    let loaded = certrelay_shell::conf::load(config_dir).ok()?;
    Some(enrolled_map(&loaded.config)).filter(|p| p.exists())
}

/// `revoke` in root's table and in the enrolled one (kept mail_owner's): refused only when
/// neither lists it.
pub fn revoke_in_both(
    map: &Path,
    enrolled: Option<&Path>,
    what: &str,
) -> Result<String, certrelay_shell::pki::PkiError> {
    use certrelay_shell::pki::PkiError;
    let first = certrelay_shell::pki::revoke(map, what);
    let Some(enrolled) = enrolled else {
        return first.map(|e| e.report());
    };
    let second = enrolled::revoke(enrolled, what);
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(a.report() + &b.report()),
        (Ok(a), Err(PkiError::NotListed { .. })) => Ok(a.report()),
        (Err(PkiError::NotListed { .. }), Ok(b)) => Ok(b.report()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}
