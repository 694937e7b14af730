//! `main.cf` text to raw `name = value` settings (before expansion).

use super::expand::RawValue;
use super::params::is_param_name;
use crate::diagnostic::{Diagnostic, Location};
use crate::text::logical_lines;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Reads the settings of `main.cf`; a later setting of the same name replaces an earlier one.
pub(crate) fn read(file: &str, text: &str) -> (BTreeMap<String, RawValue>, Vec<Diagnostic>) {
    let mut settings = BTreeMap::new();
    let mut diagnostics = Vec::new();
    let (lines, orphans) = logical_lines(text);
    for line in orphans {
        diagnostics.push(Diagnostic::warning(
            &Location::new(file, line),
            "line starts with whitespace but continues nothing; read as a new setting",
        ));
    }
    for line in lines {
        let at = Location::new(file, line.line);
        match split_setting(&line.text) {
            Ok((name, value)) => {
                settings.insert(
                    String::from(name),
                    RawValue {
                        text: String::from(value),
                        at,
                    },
                );
            }
            Err(message) => diagnostics.push(Diagnostic::error(&at, message)),
        }
    }
    (settings, diagnostics)
}

/// Splits `name = value`, checking the name.
pub(crate) fn split_setting(text: &str) -> Result<(&str, &str), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "missing \"=\" in \"{text}\": write settings as name = value"
        ));
    };
    let name = name.trim();
    if !is_param_name(name) {
        return Err(format!(
            "invalid parameter name \"{name}\": use letters, digits and \"_\""
        ));
    }
    Ok((name, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn settings_and_errors() {
        let text = "# main.cf\n\
                    myhostname = kaoru.asyd.net\n\
                    mynetworks = 127.0.0.0/8,\n    [::1]/128\n\
                    smtpd_banner=$myhostname # not a comment\n\
                    relayhost =\n\
                    bad line\n\
                    bad name = x\n\
                    = x\n\
                    myhostname = again.example\n";
        let (settings, diags) = read("main.cf", text);
        let got: Vec<(&str, &str, u32)> = settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.text.as_str(), v.at.line))
            .collect();
        assert_eq!(
            got,
            [
                ("myhostname", "again.example", 10),
                ("mynetworks", "127.0.0.0/8, [::1]/128", 3),
                ("relayhost", "", 6),
                ("smtpd_banner", "$myhostname # not a comment", 5),
            ]
        );
        let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "main.cf:7: error: missing \"=\" in \"bad line\": write settings as name = value",
                "main.cf:8: error: invalid parameter name \"bad name\": use letters, digits and \"_\"",
                "main.cf:9: error: invalid parameter name \"\": use letters, digits and \"_\"",
            ]
        );
    }
}
