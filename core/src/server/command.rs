//! Command lines: the verb, then the arguments of each verb.
//!
//! The verb is recognised first and the arguments parsed later, after the session has
//! checked sequence and TLS rules, because that is the order in which Postfix answers.

use super::error::ServerError;
use crate::address::{parse_path_with, Path};
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;

/// The SMTP verbs the server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `HELO`.
    Helo,
    /// `EHLO`.
    Ehlo,
    /// `STARTTLS`.
    StartTls,
    /// `MAIL`.
    Mail,
    /// `RCPT`.
    Rcpt,
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `VRFY`.
    Vrfy,
    /// `HELP`.
    Help,
    /// `QUIT`.
    Quit,
    /// `XCERTRELAY`: pairing and renewal ([`crate::enroll`]), inside TLS on a relay that
    /// enrolls.
    XCertRelay,
}

impl Verb {
    /// Every verb, in the order the disconnect log counts them.
    pub const ALL: [Verb; 12] = [
        Verb::Helo,
        Verb::Ehlo,
        Verb::StartTls,
        Verb::Mail,
        Verb::Rcpt,
        Verb::Data,
        Verb::Rset,
        Verb::Noop,
        Verb::Vrfy,
        Verb::Help,
        Verb::Quit,
        Verb::XCertRelay,
    ];

    /// Lower-case name, as logs show it (`rcpt`).
    pub const fn name(self) -> &'static str {
        match self {
            Verb::Helo => "helo",
            Verb::Ehlo => "ehlo",
            Verb::StartTls => "starttls",
            Verb::Mail => "mail",
            Verb::Rcpt => "rcpt",
            Verb::Data => "data",
            Verb::Rset => "rset",
            Verb::Noop => "noop",
            Verb::Vrfy => "vrfy",
            Verb::Help => "help",
            Verb::Quit => "quit",
            Verb::XCertRelay => "xcertrelay",
        }
    }

    fn from_word(word: &[u8]) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.name().as_bytes().eq_ignore_ascii_case(word))
    }

    /// Commands allowed before STARTTLS when TLS is mandatory.
    pub const fn allowed_before_tls(self) -> bool {
        matches!(
            self,
            Verb::Helo | Verb::Ehlo | Verb::StartTls | Verb::Noop | Verb::Quit
        )
    }
}

/// A command line split into its verb and its arguments (trimmed, possibly empty).
#[derive(Debug)]
pub struct CommandLine<'a> {
    /// The verb.
    pub verb: Verb,
    /// Everything after the verb, as text (bytes that are not UTF-8 become U+FFFD, which no
    /// argument parser accepts).
    pub args: Cow<'a, str>,
}

/// Splits a line (without CR LF) into verb and arguments.
pub fn split_line(line: &[u8]) -> Result<CommandLine<'_>, ServerError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Err(ServerError::EmptyLine);
    }
    let end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let verb = Verb::from_word(&line[..end]).ok_or(ServerError::Unrecognized)?;
    let args = String::from_utf8_lossy(line[end..].trim_ascii());
    Ok(CommandLine { verb, args })
}

/// `BODY=` of `MAIL FROM:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyType {
    /// `7BIT` or none given.
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// The arguments of `MAIL FROM:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailArgs {
    /// The reverse-path.
    pub sender: Path,
    /// `SIZE=`, if given.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531): the transaction may carry UTF-8 addresses and header fields.
    pub smtputf8: bool,
}

/// Parses `FROM:<path> [SIZE=n] [BODY=...] [SMTPUTF8]`; `limit` is `message_size_limit`
/// (0: none), `smtputf8` is `smtputf8_enable` (without it `SMTPUTF8` is an unsupported
/// option and every address is ASCII).
///
/// A UTF-8 sender needs `SMTPUTF8` on the same command: without it a UTF-8 local part is
/// refused with `553 5.6.7` and a UTF-8 domain as bad address syntax, Postfix's replies
/// with `strict_smtputf8 = yes`.
pub fn parse_mail(args: &str, limit: u64, smtputf8: bool) -> Result<MailArgs, ServerError> {
    let rest = strip_keyword(args, "FROM:").ok_or(ServerError::Syntax("MAIL FROM:<address>"))?;
    let (sender, params) =
        parse_path_with(rest.trim_start(), smtputf8).map_err(|_| ServerError::BadSender)?;
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(ServerError::BadSender);
    }
    let mut mail = MailArgs {
        sender,
        size: None,
        body: BodyType::SevenBit,
        smtputf8: false,
    };
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            mail.size = Some(parse_size(value)?);
        } else if key.eq_ignore_ascii_case("BODY") {
            mail.body = parse_body(value)?;
        } else if smtputf8 && param.eq_ignore_ascii_case("SMTPUTF8") {
            mail.smtputf8 = true;
        } else {
            return Err(ServerError::UnsupportedOption(String::from(param)));
        }
    }
    if !mail.smtputf8 {
        undeclared_utf8(&mail.sender, ServerError::BadSender)?;
    }
    if limit > 0 && mail.size.is_some_and(|s| s > limit) {
        return Err(ServerError::SizeExceedsLimit);
    }
    Ok(mail)
}

/// A UTF-8 address in a transaction without `SMTPUTF8`: `bad_syntax` for a UTF-8 domain,
/// [`ServerError::Smtputf8Undeclared`] for a UTF-8 local part.
fn undeclared_utf8(path: &Path, bad_syntax: ServerError) -> Result<(), ServerError> {
    if !path.domains_are_ascii() {
        Err(bad_syntax)
    } else if !path.local_is_ascii() {
        Err(ServerError::Smtputf8Undeclared)
    } else {
        Ok(())
    }
}

/// A decimal size; one too large for 64 bits counts as over any limit.
fn parse_size(value: &str) -> Result<u64, ServerError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServerError::BadSize);
    }
    Ok(value.parse().unwrap_or(u64::MAX))
}

fn parse_body(value: &str) -> Result<BodyType, ServerError> {
    if value.eq_ignore_ascii_case("7BIT") {
        Ok(BodyType::SevenBit)
    } else if value.eq_ignore_ascii_case("8BITMIME") {
        Ok(BodyType::EightBitMime)
    } else {
        // Postfix answers an unknown BODY value as an unsupported option.
        Err(ServerError::UnsupportedOption(format!("BODY={value}")))
    }
}

/// Parses `TO:<path>`; no RCPT parameter is supported. `smtputf8` is `smtputf8_enable`,
/// `declared` whether this transaction's MAIL carried `SMTPUTF8` (a UTF-8 recipient needs
/// it, as a UTF-8 sender does in [`parse_mail`]).
pub fn parse_rcpt(args: &str, smtputf8: bool, declared: bool) -> Result<Path, ServerError> {
    let rest = strip_keyword(args, "TO:").ok_or(ServerError::Syntax("RCPT TO:<address>"))?;
    let (rcpt, params) =
        parse_path_with(rest.trim_start(), smtputf8).map_err(|_| ServerError::BadRecipient)?;
    if rcpt.is_null() || (!params.is_empty() && !params.starts_with(' ')) {
        return Err(ServerError::BadRecipient);
    }
    if !declared {
        undeclared_utf8(&rcpt, ServerError::BadRecipient)?;
    }
    match params.split_ascii_whitespace().next() {
        Some(param) => Err(ServerError::UnsupportedOption(String::from(param))),
        None => Ok(rcpt),
    }
}

/// The host name given to EHLO/HELO: its first word, printable ASCII only.
pub fn parse_helo(args: &str, verb: Verb) -> Result<String, ServerError> {
    let usage = if verb == Verb::Ehlo {
        "EHLO hostname"
    } else {
        "HELO hostname"
    };
    match args.split_ascii_whitespace().next() {
        Some(name) => Ok(super::received::printable(name)),
        None => Err(ServerError::Syntax(usage)),
    }
}

/// `args` without a leading keyword (ASCII case-insensitive).
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &args[keyword.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn verbs_and_arguments() {
        type Case = (&'static [u8], Result<(Verb, &'static str), ServerError>);
        let table: &[Case] = &[
            (b"EHLO laptop", Ok((Verb::Ehlo, "laptop"))),
            (b"  ehlo   laptop  ", Ok((Verb::Ehlo, "laptop"))),
            (b"MAIL FROM:<a@b>", Ok((Verb::Mail, "FROM:<a@b>"))),
            (b"StartTLS", Ok((Verb::StartTls, ""))),
            (b"quit\t", Ok((Verb::Quit, ""))),
            (b"", Err(ServerError::EmptyLine)),
            (b" \t ", Err(ServerError::EmptyLine)),
            (b"BDAT 10", Err(ServerError::Unrecognized)),
            (b"EHLOX", Err(ServerError::Unrecognized)),
            (b"\xff\xfe", Err(ServerError::Unrecognized)),
        ];
        for (line, want) in table {
            let got = split_line(line).map(|c| (c.verb, c.args.to_string()));
            let want = want.clone().map(|(v, a)| (v, a.to_string()));
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[test]
    fn mail_arguments() {
        type Parsed = (&'static str, Option<u64>, BodyType);
        let table: &[(&str, Result<Parsed, ServerError>)] = &[
            ("FROM:<a@b.org>", Ok(("a@b.org", None, BodyType::SevenBit))),
            ("from: <a@b.org>", Ok(("a@b.org", None, BodyType::SevenBit))),
            ("FROM:<>", Ok(("", None, BodyType::SevenBit))),
            (
                "FROM:<a@b.org> SIZE=100 BODY=8BITMIME",
                Ok(("a@b.org", Some(100), BodyType::EightBitMime)),
            ),
            (
                "FROM:<a@b.org> body=7bit",
                Ok(("a@b.org", None, BodyType::SevenBit)),
            ),
            (
                "FROM:<a@b.org> SIZE=1000",
                Ok(("a@b.org", Some(1000), BodyType::SevenBit)),
            ),
            (
                "FROM:<a@b.org> SIZE=1001",
                Err(ServerError::SizeExceedsLimit),
            ),
            (
                "FROM:<a@b.org> SIZE=99999999999999999999999",
                Err(ServerError::SizeExceedsLimit),
            ),
            ("FROM:<a@b.org> SIZE=", Err(ServerError::BadSize)),
            ("FROM:<a@b.org> SIZE=-1", Err(ServerError::BadSize)),
            (
                "FROM:<a@b.org> BODY=BINARYMIME",
                Err(ServerError::UnsupportedOption("BODY=BINARYMIME".into())),
            ),
            (
                "FROM:<a@b.org> SMTPUTF8",
                Err(ServerError::UnsupportedOption("SMTPUTF8".into())),
            ),
            (
                "FROM:<a@b.org> AUTH=<>",
                Err(ServerError::UnsupportedOption("AUTH=<>".into())),
            ),
            ("FROM:<a@b.org>junk", Err(ServerError::BadSender)),
            ("FROM:<a b>", Err(ServerError::BadSender)),
            ("FROM:", Err(ServerError::BadSender)),
            (
                "TO:<a@b.org>",
                Err(ServerError::Syntax("MAIL FROM:<address>")),
            ),
            ("", Err(ServerError::Syntax("MAIL FROM:<address>"))),
            ("FROM:<\u{e9}@b.org>", Err(ServerError::BadSender)),
        ];
        for (args, want) in table {
            // smtputf8_enable = no: SMTPUTF8 is unknown and addresses are ASCII.
            let got = parse_mail(args, 1000, false).map(|m| (m.sender.to_string(), m.size, m.body));
            let want = want.clone().map(|(s, z, b)| (s.to_string(), z, b));
            assert_eq!(got, want, "{args}");
        }
        assert_eq!(
            parse_mail("FROM:<a@b> SIZE=99999", 0, false).unwrap().size,
            Some(99999)
        );
    }

    #[test]
    fn rcpt_arguments() {
        let table: &[(&str, Result<&str, ServerError>)] = &[
            ("TO:<a@b.org>", Ok("a@b.org")),
            ("to: <postmaster>", Ok("postmaster")),
            ("TO:<>", Err(ServerError::BadRecipient)),
            ("TO:<a@>", Err(ServerError::BadRecipient)),
            (
                "TO:<a@b.org> NOTIFY=NEVER",
                Err(ServerError::UnsupportedOption("NOTIFY=NEVER".into())),
            ),
            (
                "FROM:<a@b.org>",
                Err(ServerError::Syntax("RCPT TO:<address>")),
            ),
        ];
        for (args, want) in table {
            let got = parse_rcpt(args, false, false).map(|p| p.to_string());
            assert_eq!(got, want.clone().map(ToString::to_string), "{args}");
        }
    }

    #[test]
    fn smtputf8_on_mail() {
        type Case = (&'static str, Result<(&'static str, bool), ServerError>);
        let table: &[Case] = &[
            ("FROM:<a@b.org>", Ok(("a@b.org", false))),
            ("FROM:<a@b.org> SMTPUTF8", Ok(("a@b.org", true))),
            ("FROM:<a@b.org> smtputf8 SIZE=10", Ok(("a@b.org", true))),
            (
                "FROM:<josé@exemple.fr> SMTPUTF8",
                Ok(("josé@exemple.fr", true)),
            ),
            ("FROM:<a@exemplé.fr> SMTPUTF8", Ok(("a@exemplé.fr", true))),
            (
                "FROM:<\"jo sé\"@exemple.fr> SMTPUTF8",
                Ok(("\"jo sé\"@exemple.fr", true)),
            ),
            (
                "FROM:<用户@例子.广告> SMTPUTF8",
                Ok(("用户@例子.广告", true)),
            ),
            ("FROM:<> SMTPUTF8", Ok(("", true))),
            // Postfix with strict_smtputf8 = yes: a UTF-8 local part needs SMTPUTF8 ...
            (
                "FROM:<josé@exemple.fr>",
                Err(ServerError::Smtputf8Undeclared),
            ),
            // ... and a UTF-8 domain without it is bad syntax.
            ("FROM:<a@exemplé.fr>", Err(ServerError::BadSender)),
            ("FROM:<josé@exemplé.fr>", Err(ServerError::BadSender)),
            (
                "FROM:<a@b.org> SMTPUTF8=yes",
                Err(ServerError::UnsupportedOption("SMTPUTF8=yes".into())),
            ),
            // Control characters stay refused, C1 ones included.
            (
                "FROM:<a\u{85}b@exemple.fr> SMTPUTF8",
                Err(ServerError::BadSender),
            ),
            (
                "FROM:<a@exem\u{9f}ple.fr> SMTPUTF8",
                Err(ServerError::BadSender),
            ),
            (
                "FROM:<\"a\u{85}\"@exemple.fr> SMTPUTF8",
                Err(ServerError::BadSender),
            ),
            (
                "FROM:<a\u{1}b@exemple.fr> SMTPUTF8",
                Err(ServerError::BadSender),
            ),
            // U+FFFD is what a malformed line would become; the session refuses those first,
            // and an address of sheer punctuation is still refused.
            ("FROM:<a<é>@b.fr> SMTPUTF8", Err(ServerError::BadSender)),
        ];
        for (args, want) in table {
            let got = parse_mail(args, 1000, true).map(|m| (m.sender.to_string(), m.smtputf8));
            let want = want.clone().map(|(s, u)| (s.to_string(), u));
            assert_eq!(got, want, "{args}");
        }
    }

    #[test]
    fn smtputf8_on_rcpt() {
        let table: &[(&str, bool, Result<&str, ServerError>)] = &[
            ("TO:<josé@exemple.fr>", true, Ok("josé@exemple.fr")),
            ("TO:<a@exemplé.fr>", true, Ok("a@exemplé.fr")),
            ("TO:<a@b.org>", false, Ok("a@b.org")),
            (
                "TO:<josé@exemple.fr>",
                false,
                Err(ServerError::Smtputf8Undeclared),
            ),
            ("TO:<a@exemplé.fr>", false, Err(ServerError::BadRecipient)),
            (
                "TO:<@relais.fr:josé@exemple.fr>",
                true,
                Ok("josé@exemple.fr"),
            ),
            (
                "TO:<@relaïs.fr:jose@exemple.fr>",
                false,
                Err(ServerError::BadRecipient),
            ),
            (
                "TO:<a\u{9b}@exemple.fr>",
                true,
                Err(ServerError::BadRecipient),
            ),
        ];
        for (args, declared, want) in table {
            let got = parse_rcpt(args, true, *declared).map(|p| p.to_string());
            assert_eq!(
                got,
                want.clone().map(ToString::to_string),
                "{args} {declared}"
            );
        }
        // smtputf8_enable = no: no UTF-8 address at all.
        assert_eq!(
            parse_rcpt("TO:<josé@exemple.fr>", false, false),
            Err(ServerError::BadRecipient)
        );
    }

    #[test]
    fn helo_names() {
        assert_eq!(
            parse_helo("laptop.example x", Verb::Ehlo).unwrap(),
            "laptop.example"
        );
        assert_eq!(parse_helo("a\u{7}b", Verb::Helo).unwrap(), "a?b");
        assert_eq!(
            parse_helo("", Verb::Helo),
            Err(ServerError::Syntax("HELO hostname"))
        );
    }
}
