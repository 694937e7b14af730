//! Postfix-style configuration: `main.cf`, `master.cf`, and the typed settings built from
//! them.
//!
//! Everything here is text in, values and [`Diagnostic`]s out: the shell reads the files and
//! passes their text with the file name, so every message can say `file:line`.
//!
//! - [`Config::parse`] reads `main.cf` over the built-in defaults ([`params`]), expands
//!   `$name` references and reports unknown parameters.
//! - [`master_cf::parse`] finds the SMTP listeners in `master.cf`; [`Config::with_overrides`]
//!   applies a listener's `-o name=value` settings (or the shell's) on top.
//! - [`server::server_settings`] and [`client::client_settings`] turn a [`Config`] into the
//!   typed [`crate::settings`] the sessions run with; the typed getters of [`Config`] serve
//!   the rest.

pub mod client;
mod expand;
mod main_cf;
pub mod master_cf;
pub mod params;
pub mod server;
mod typed;
pub mod values;

pub use crate::diagnostic::{has_errors, Diagnostic, Location, Severity};
pub use master_cf::{Endpoint, Listener, Override};

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use expand::{Expander, RawValue};
use params::{is_param_name, Use, PARAMS};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default (or a default the shell supplied, such as the host name).
    Default,
    /// Set in `main.cf`, by a `master.cf` `-o`, or by the shell, at this location.
    Set(Location),
}

/// A parameter's value after expansion, with its text as written and its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The expanded value.
    pub text: String,
    /// The value as written, before expansion (what `check` prints).
    pub raw: String,
    /// Default or where it was set.
    pub origin: Origin,
}

impl Value {
    /// True when the value was set rather than defaulted.
    pub fn is_set(&self) -> bool {
        matches!(self.origin, Origin::Set(_))
    }
}

/// The parameters in effect: built-in defaults, then `main.cf`, then overrides, expanded.
#[derive(Clone, Debug)]
pub struct Config {
    main_file: String,
    defaults: BTreeMap<String, String>,
    settings: BTreeMap<String, RawValue>,
    values: BTreeMap<String, Value>,
    build_diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// Reads the text of `main.cf` (named `file` in messages).
    pub fn parse(file: &str, text: &str) -> (Config, Vec<Diagnostic>) {
        Self::parse_with_defaults(file, text, &[])
    }

    /// As [`Config::parse`], with some built-in defaults replaced by the shell (for example
    /// `myhostname` by the machine's host name). `main.cf` still wins over these.
    pub fn parse_with_defaults(
        file: &str,
        text: &str,
        defaults: &[(&str, &str)],
    ) -> (Config, Vec<Diagnostic>) {
        let (settings, mut diagnostics) = main_cf::read(file, text);
        let mut config = Config {
            main_file: String::from(file),
            defaults: defaults
                .iter()
                .map(|(n, v)| (String::from(*n), String::from(*v)))
                .collect(),
            settings,
            values: BTreeMap::new(),
            build_diagnostics: Vec::new(),
        };
        diagnostics.extend(config.rebuild());
        diagnostics.sort_by_key(|d| d.line);
        (config, diagnostics)
    }

    /// A copy with `overrides` applied on top (later ones win). The diagnostics are only
    /// the new ones: those this configuration already reported are left out.
    pub fn with_overrides(&self, overrides: &[Override]) -> (Config, Vec<Diagnostic>) {
        let mut next = self.clone();
        let mut diagnostics = Vec::new();
        for o in overrides {
            let name = o.name.trim();
            if !is_param_name(name) {
                diagnostics.push(Diagnostic::error(
                    &o.location,
                    format!("invalid parameter name \"{name}\" in override"),
                ));
                continue;
            }
            next.settings.insert(
                String::from(name),
                RawValue {
                    text: String::from(o.value.trim()),
                    at: o.location.clone(),
                },
            );
        }
        let built = next.rebuild();
        diagnostics.extend(
            built
                .into_iter()
                .filter(|d| !self.build_diagnostics.contains(d)),
        );
        (next, diagnostics)
    }

    /// Expands every parameter again and returns the diagnostics of doing so.
    fn rebuild(&mut self) -> Vec<Diagnostic> {
        let raw = self.namespace();
        let mut expander = Expander::new(&raw);
        let mut values = BTreeMap::new();
        for (name, r) in &raw {
            let text = expander.value_of(name).unwrap_or_default();
            let origin = match self.settings.get(name) {
                Some(set) => Origin::Set(set.at.clone()),
                None => Origin::Default,
            };
            let raw = r.text.clone();
            values.insert(name.clone(), Value { text, raw, origin });
        }
        let mut diagnostics = expander.diagnostics;
        for (name, set) in &self.settings {
            let message = match params::find(name) {
                None if !expander.referenced.contains(name) => {
                    format!("unused parameter: {name}={}", set.text)
                }
                Some(p) => match p.use_ {
                    Use::Ignored(reason) => format!("{name} is ignored: {reason}"),
                    _ => continue,
                },
                None => continue,
            };
            diagnostics.push(Diagnostic::warning(&set.at, message));
        }
        diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        self.values = values;
        self.build_diagnostics = diagnostics.clone();
        diagnostics
    }

    /// All parameters before expansion: defaults, the shell's defaults, then settings.
    fn namespace(&self) -> BTreeMap<String, RawValue> {
        let default_at = Location::new(&self.main_file, 0);
        let mut raw: BTreeMap<String, RawValue> = PARAMS
            .iter()
            .map(|p| (String::from(p.name), String::from(p.default)))
            .chain(self.defaults.clone())
            .map(|(name, text)| {
                let at = default_at.clone();
                (name, RawValue { text, at })
            })
            .collect();
        raw.extend(self.settings.clone());
        if !self.settings.contains_key("mydomain") && !self.defaults.contains_key("mydomain") {
            let host = Expander::new(&raw)
                .value_of("myhostname")
                .unwrap_or_default();
            if let Some((_, domain)) = host.split_once('.').filter(|(_, d)| !d.is_empty()) {
                let text = domain.replace('$', "$$");
                raw.insert(
                    String::from("mydomain"),
                    RawValue {
                        text,
                        at: default_at,
                    },
                );
            }
        }
        raw
    }

    /// The value of `name`, if it is a known parameter or was set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The expanded text of `name`; empty when unknown.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", |v| v.text.as_str())
    }

    /// True when `name` was set (in `main.cf` or an override) rather than defaulted.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some_and(Value::is_set)
    }

    /// Where `name` was set; for a default, `main.cf` as a whole (line 0).
    pub fn location(&self, name: &str) -> Location {
        match self.get(name).map(|v| &v.origin) {
            Some(Origin::Set(at)) => at.clone(),
            _ => Location::new(&self.main_file, 0),
        }
    }

    /// The name `main.cf` was read under.
    pub fn main_file(&self) -> &str {
        &self.main_file
    }

    /// Parameters that were set (not defaulted), by name, as `postconf -n` lists them.
    pub fn non_default(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values
            .iter()
            .filter(|(_, v)| v.is_set())
            .map(|(n, v)| (n.as_str(), v))
    }
}

#[cfg(test)]
mod tests;
