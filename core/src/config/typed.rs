//! Typed getters over [`Config`]: each reads one parameter and, when its text does not
//! read, returns a diagnostic that names the parameter and where it was set.

use super::params::{self, Kind};
use super::values::{parse_bool, parse_number, parse_time, TimeUnit};
use super::{Config, Diagnostic};
use crate::fingerprint::DigestKind;
use crate::net::{self, Cidr};
use crate::nexthop::{self, NextHop};
use crate::table::TableSpec;
use crate::text::split_list;
use crate::tls_policy::{self, GlobalTlsParams, TlsLevel};
use alloc::format;
use alloc::vec::Vec;
use core::fmt::Display;
use core::time::Duration;

impl Config {
    /// An error about parameter `name`: `name = value: problem`.
    pub fn problem(&self, name: &str, problem: impl Display) -> Diagnostic {
        Diagnostic::error(
            &self.location(name),
            format!("{name} = {}: {problem}", self.text(name)),
        )
    }

    /// The items of list parameter `name`.
    pub fn list(&self, name: &str) -> Vec<&str> {
        split_list(self.text(name)).collect()
    }

    /// Boolean parameter `name` (`yes`/`no`, any case).
    pub fn bool(&self, name: &str) -> Result<bool, Diagnostic> {
        parse_bool(self.text(name)).ok_or_else(|| self.problem(name, "expected yes or no"))
    }

    /// Numeric parameter `name`.
    pub fn number(&self, name: &str) -> Result<u64, Diagnostic> {
        parse_number(self.text(name)).ok_or_else(|| self.problem(name, "expected a whole number"))
    }

    /// Time parameter `name`; a bare number is in the parameter's default unit (seconds
    /// for most, days for the queue lifetimes).
    pub fn time(&self, name: &str) -> Result<Duration, Diagnostic> {
        let unit = match params::find(name).map(|p| p.kind) {
            Some(Kind::Time(unit)) => unit,
            _ => TimeUnit::Second,
        };
        parse_time(self.text(name), unit).ok_or_else(|| {
            self.problem(
                name,
                "expected a time: a number with an optional unit s, m, h, d or w",
            )
        })
    }

    /// The table references in list parameter `name` (`relay_clientcerts`,
    /// `smtp_tls_per_site`).
    pub fn tables(&self, name: &str) -> Result<Vec<TableSpec>, Diagnostic> {
        TableSpec::parse_list(self.text(name)).map_err(|e| self.problem(name, e))
    }

    /// `relayhost`, in failover order; empty means deliver by MX.
    pub fn relayhost(&self) -> Result<Vec<NextHop>, Diagnostic> {
        nexthop::parse_relayhost(self.text("relayhost")).map_err(|e| self.problem("relayhost", e))
    }

    /// `mynetworks`.
    pub fn mynetworks(&self) -> Result<Vec<Cidr>, Diagnostic> {
        net::parse_list(self.text("mynetworks")).map_err(|e| self.problem("mynetworks", e))
    }

    /// `smtpd_tls_fingerprint_digest` when set explicitly (then only that digest is used);
    /// `None` when not set, meaning the digest is told by each map entry's length.
    pub fn fingerprint_digest(&self) -> Result<Option<DigestKind>, Diagnostic> {
        const NAME: &str = "smtpd_tls_fingerprint_digest";
        let text = self.text(NAME).trim();
        if !self.is_set(NAME) || text.is_empty() {
            return Ok(None);
        }
        let kind = match text.to_ascii_lowercase().as_str() {
            "md5" => DigestKind::Md5,
            "sha1" => DigestKind::Sha1,
            "sha256" => DigestKind::Sha256,
            "sha512" => DigestKind::Sha512,
            _ => return Err(self.problem(NAME, "use md5, sha1, sha256 or sha512")),
        };
        Ok(Some(kind))
    }

    /// `smtpd_tls_ccert_verifydepth`: the most CA certificates above the client's leaf,
    /// trust anchor included (SPEC A4).
    pub fn ccert_verifydepth(&self) -> Result<u32, Diagnostic> {
        const NAME: &str = "smtpd_tls_ccert_verifydepth";
        let n = self.number(NAME)?;
        u32::try_from(n).map_err(|_| self.problem(NAME, "number too large"))
    }

    /// The client's global TLS level (`smtp_tls_security_level`, else `smtp_enforce_tls`
    /// with `smtp_tls_enforce_peername`, else `smtp_use_tls`).
    pub fn smtp_tls_level(&self) -> Result<TlsLevel, Diagnostic> {
        let params = GlobalTlsParams {
            security_level: self.text("smtp_tls_security_level"),
            enforce_tls: self.bool("smtp_enforce_tls")?,
            enforce_peername: self.bool("smtp_tls_enforce_peername")?,
            use_tls: self.bool("smtp_use_tls")?,
        };
        tls_policy::global_level(&params).map_err(|e| self.problem("smtp_tls_security_level", e))
    }
}
