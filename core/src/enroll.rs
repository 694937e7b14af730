//! Pairing a laptop with its relay, and renewing its certificate: the one-time code, and the
//! `XCERTRELAY` extension's commands, request lines and answers (docs/enroll-protocol.md).
//!
//! The code read over the phone carries 60 bits of the SHA-256 digest of the relay's
//! certificate (the laptop pins the relay with them on first contact) and a 40-bit secret
//! (which the laptop proves to the relay). Its text is Crockford's base32: 20 symbols in four
//! groups of five, read without regard to case, with `O` read as zero and `I`/`L` as one.
//!
//! What this module does not do: make keys, check request signatures or sign certificates
//! (the shell, with a real X.509 library), store codes, count attempts or read clocks. It
//! parses what crosses the wire and says what to answer; nothing here panics on bad input.

use crate::fingerprint::{DigestKind, Fingerprint};
use crate::reply::Reply;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The EHLO keyword and the verb, offered only inside TLS on a relay that enrolls.
pub const KEYWORD: &str = "XCERTRELAY";

/// Bits of the relay certificate's SHA-256 digest in a code.
pub const PIN_BITS: u32 = 60;
/// Bits of secret in a code.
pub const SECRET_BITS: u32 = 40;
/// Symbols in a code (5 bits each), dashes not counted.
pub const CODE_SYMBOLS: usize = ((PIN_BITS + SECRET_BITS) / 5) as usize;
/// Symbols of the secret: the last ones of the code.
pub const SECRET_SYMBOLS: usize = (SECRET_BITS / 5) as usize;

/// Longest request accepted, DER octets (a P-384 request is under 500): the one limit, which
/// the relay's line reader (in base64) and its signer (in DER) both apply.
pub const MAX_REQUEST_DER: usize = 6144;

/// [`MAX_REQUEST_DER`] in base64 characters, padding included: the request lines are refused
/// as soon as they pass it.
pub const MAX_REQUEST_BASE64: usize = 4 * MAX_REQUEST_DER.div_ceil(3);

/// Base64 characters per request line the laptop sends (well under the 512-octet limit).
pub const REQUEST_LINE: usize = 76;

/// Crockford's alphabet: digits and letters without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The 40-bit secret of a code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(u64);

impl Secret {
    /// The secret from 5 random octets.
    pub fn from_bytes(bytes: [u8; 5]) -> Secret {
        let mut value = 0u64;
        for b in bytes {
            value = (value << 8) | u64::from(b);
        }
        Secret(value)
    }

    /// The 5 octets (big-endian), what the relay hashes.
    pub fn to_bytes(self) -> [u8; 5] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }

    /// Reads the 8 symbols the laptop sends (dashes and case ignored).
    pub fn parse(text: &str) -> Result<Secret, CodeError> {
        let (value, count) = decode_symbols(text)?;
        if count != SECRET_SYMBOLS {
            return Err(CodeError::Length { found: count });
        }
        Ok(Secret(value as u64))
    }
}

impl fmt::Display for Secret {
    /// The 8 symbols, upper case, no dash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_symbols(u128::from(self.0), SECRET_SYMBOLS))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never in logs.
        f.write_str("Secret(..)")
    }
}

/// A one-time pairing code: the relay's pin and the secret.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Code {
    /// The first [`PIN_BITS`] bits of the relay certificate's SHA-256 digest.
    pin: u64,
    /// The secret.
    pub secret: Secret,
}

/// Why a code's text is not a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// A character outside the alphabet (and not a dash or a space).
    BadSymbol(char),
    /// The wrong number of symbols.
    Length {
        /// How many there were.
        found: usize,
    },
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::BadSymbol(c) => write!(
                f,
                "{c:?} is not in a code (digits and letters other than U, dashes between groups)"
            ),
            CodeError::Length { found } => {
                write!(f, "{found} symbols where the code has {CODE_SYMBOLS}")
            }
        }
    }
}

/// The first [`PIN_BITS`] bits of the SHA-256 digest of `cert_der`.
fn pin_of(cert_der: &[u8]) -> u64 {
    let digest = Fingerprint::of(DigestKind::Sha256, cert_der);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_be_bytes(first) >> (64 - PIN_BITS)
}

impl Code {
    /// The code for the relay certificate `cert_der` (its end certificate, DER) and `secret`.
    pub fn new(cert_der: &[u8], secret: Secret) -> Code {
        Code {
            pin: pin_of(cert_der),
            secret,
        }
    }

    /// True when `cert_der` is the certificate the code was made for (to 60 bits).
    pub fn pins(&self, cert_der: &[u8]) -> bool {
        // Not secret: the relay shows its certificate to anyone; plain comparison is fine.
        pin_of(cert_der) == self.pin
    }

    /// Reads a code as typed: case, dashes and spaces do not matter, `O` is zero and `I` and
    /// `L` are one.
    pub fn parse(text: &str) -> Result<Code, CodeError> {
        let (value, count) = decode_symbols(text)?;
        if count != CODE_SYMBOLS {
            return Err(CodeError::Length { found: count });
        }
        let mask = (1u128 << SECRET_BITS) - 1;
        Ok(Code {
            pin: (value >> SECRET_BITS) as u64,
            secret: Secret((value & mask) as u64),
        })
    }
}

impl fmt::Display for Code {
    /// `XXXXX-XXXXX-XXXXX-XXXXX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = (u128::from(self.pin) << SECRET_BITS) | u128::from(self.secret.0);
        let symbols = encode_symbols(value, CODE_SYMBOLS);
        for (i, chunk) in symbols.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(core::str::from_utf8(chunk).unwrap_or(""))?;
        }
        Ok(())
    }
}

/// `count` symbols of the low `5 * count` bits of `value`, most significant first.
fn encode_symbols(value: u128, count: usize) -> String {
    (0..count)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (5 * i)) & 31) as usize]))
        .collect()
}

/// The value of a run of symbols and how many there were (at most 25 are kept).
fn decode_symbols(text: &str) -> Result<(u128, usize), CodeError> {
    let mut value = 0u128;
    let mut count = 0usize;
    for c in text.chars() {
        let digit = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => 0,
            'I' | 'L' => 1,
            u if u.is_ascii_alphanumeric() && u != 'U' => ALPHABET
                .iter()
                .position(|&a| char::from(a) == u)
                .unwrap_or(0) as u128,
            _ => return Err(CodeError::BadSymbol(c)),
        };
        count += 1;
        if count <= 25 {
            value = (value << 5) | digit;
        }
    }
    Ok((value, count))
}

/// An `XCERTRELAY` command's argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `ENROLL <secret>`: first pairing, authenticated by the code's secret.
    Enroll(Secret),
    /// `RENEW`: a new certificate for a listed laptop, authenticated by its current one.
    Renew,
}

/// Why an `XCERTRELAY` command line is refused; each is a `501` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// Neither `ENROLL secret` nor `RENEW`.
    Usage,
    /// `ENROLL` with something that is not 8 symbols.
    BadSecret,
}

impl CommandError {
    /// The reply.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Usage => Reply::new(501, "5.5.4 Syntax: XCERTRELAY ENROLL code | RENEW"),
            CommandError::BadSecret => Reply::new(
                501,
                "5.5.4 Syntax: XCERTRELAY ENROLL takes the last 8 symbols of the code",
            ),
        }
    }
}

/// Parses the arguments of `XCERTRELAY`.
pub fn parse_command(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split_ascii_whitespace();
    let verb = words.next().ok_or(CommandError::Usage)?;
    let arg = words.next();
    if words.next().is_some() {
        return Err(CommandError::Usage);
    }
    if verb.eq_ignore_ascii_case("ENROLL") {
        let text = arg.ok_or(CommandError::BadSecret)?;
        Secret::parse(text)
            .map(Command::Enroll)
            .map_err(|_| CommandError::BadSecret)
    } else if verb.eq_ignore_ascii_case("RENEW") && arg.is_none() {
        Ok(Command::Renew)
    } else {
        Err(CommandError::Usage)
    }
}

/// The `334` that asks for the request lines.
pub fn go_ahead() -> Reply {
    Reply::new(
        334,
        "Send the certificate request in base64, then a line with a single dot",
    )
}

/// The lines a laptop sends after `334`: the request's DER in base64, then `.`.
pub fn request_lines(der: &[u8]) -> Vec<String> {
    let text = crate::dkim::base64(der);
    let mut lines: Vec<String> = text
        .as_bytes()
        .chunks(REQUEST_LINE)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    lines.push(String::from("."));
    lines
}

/// Why the request lines are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// More than [`MAX_REQUEST_BASE64`] characters.
    TooLarge,
    /// A character that is not base64, or padding in the middle.
    BadBase64,
    /// Nothing before the dot.
    Empty,
    /// A line over the 512-octet limit of command lines.
    LineTooLong,
    /// The client sent `*`.
    Cancelled,
}

impl RequestError {
    /// The reply.
    pub fn reply(&self) -> Reply {
        match self {
            RequestError::TooLarge => Reply::new(
                552,
                alloc::format!(
                    "5.3.4 Certificate request longer than {MAX_REQUEST_BASE64} base64 characters"
                ),
            ),
            RequestError::BadBase64 => {
                Reply::new(501, "5.5.2 Certificate request is not valid base64")
            }
            RequestError::Empty => Reply::new(501, "5.5.2 Empty certificate request"),
            RequestError::LineTooLong => Reply::new(
                500,
                "5.5.2 Certificate request line too long (76 base64 characters a line is usual)",
            ),
            RequestError::Cancelled => Reply::new(501, "5.7.0 Request cancelled"),
        }
    }
}

/// What one request line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send more.
    More,
    /// The request is complete: its DER, or why it is refused.
    Done(Result<Vec<u8>, RequestError>),
}

/// Collects the request lines after `334`. A fault in the middle is remembered and the
/// lines up to the dot discarded, so that client and server stay in step.
#[derive(Clone, Debug, Default)]
pub struct RequestReader {
    text: String,
    fault: Option<RequestError>,
}

impl RequestReader {
    /// A reader before the first line.
    pub fn new() -> RequestReader {
        RequestReader::default()
    }

    /// A line over the limit arrived (and was discarded by the line reader): the request is
    /// refused at the dot.
    pub fn oversized_line(&mut self) {
        if self.fault.is_none() {
            self.fault = Some(RequestError::LineTooLong);
            self.text = String::new();
        }
    }

    /// One line, without its CR LF.
    pub fn line(&mut self, line: &[u8]) -> Step {
        let line = line.trim_ascii();
        if line == b"." {
            let done = match self.fault.take() {
                Some(fault) => Err(fault),
                None if self.text.is_empty() => Err(RequestError::Empty),
                None => decode_base64(&self.text).ok_or(RequestError::BadBase64),
            };
            self.text = String::new();
            return Step::Done(done);
        }
        if line == b"*" && self.fault.is_none() && self.text.is_empty() {
            return Step::Done(Err(RequestError::Cancelled));
        }
        if self.fault.is_some() {
            return Step::More;
        }
        if !line
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            self.fault = Some(RequestError::BadBase64);
        } else if self.text.len() + line.len() > MAX_REQUEST_BASE64 {
            self.fault = Some(RequestError::TooLarge);
        } else {
            // Checked ASCII above.
            self.text.push_str(core::str::from_utf8(line).unwrap_or(""));
        }
        if self.fault.is_some() {
            self.text = String::new();
        }
        Step::More
    }
}

/// Strict standard base64 with padding; `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (i, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &b in &quad[..4 - pad] {
            n = (n << 6) | value(b)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

/// What the relay asks its shell to do once the request is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollRequest {
    /// How the client is authenticated.
    pub kind: RequestKind,
    /// The certificate request, DER, not yet checked.
    pub csr_der: Vec<u8>,
}

/// How an enrollment request is authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// By a one-time code's secret.
    Code(Secret),
    /// By the client certificate of this TLS session, trusted and listed under `label`.
    Renew {
        /// The label it is listed under.
        label: String,
    },
}

/// The shell's answer to an [`EnrollRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollAnswer {
    /// Signed: the new certificate then the CA's, PEM, and the name it is listed under.
    Issued {
        /// The name (CN and label).
        name: String,
        /// PEM: the laptop's certificate, then the CA certificate.
        chain_pem: String,
    },
    /// The code is wrong, expired or used: one answer for all, so that a reply never says
    /// which codes or names exist.
    CodeRefused,
    /// Too many failed codes from this client's address lately.
    TooManyAttempts,
    /// The request itself is refused (signature, key type, size); the reason is shown.
    BadRequest(String),
    /// The certificate cannot renew: the reason is shown.
    NotRenewable(String),
    /// The relay could not do it now (a file it could not write).
    Unavailable,
}

impl EnrollAnswer {
    /// The reply that carries it.
    pub fn reply(&self) -> Reply {
        match self {
            EnrollAnswer::Issued { name, chain_pem } => issued_reply(name, chain_pem),
            EnrollAnswer::CodeRefused => Reply::new(535, "5.7.8 Enrollment code not accepted"),
            EnrollAnswer::TooManyAttempts => Reply::new(
                454,
                "4.7.0 Too many failed enrollment attempts from this address; try again later",
            ),
            EnrollAnswer::BadRequest(why) => Reply::new(
                554,
                alloc::format!("5.7.0 Certificate request refused: {}", printable(why)),
            ),
            EnrollAnswer::NotRenewable(why) => Reply::new(
                554,
                alloc::format!("5.7.1 Certificate not renewed: {}", printable(why)),
            ),
            EnrollAnswer::Unavailable => Reply::new(
                451,
                "4.3.0 Enrollment temporarily unavailable; try again later",
            ),
        }
    }
}

/// At most 200 printable ASCII characters of `text`, for a reply line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

/// `250-2.0.0 Certificate issued for NAME`, the PEM lines, `250 2.0.0 End of certificates`.
fn issued_reply(name: &str, chain_pem: &str) -> Reply {
    let mut lines = alloc::vec![alloc::format!(
        "2.0.0 Certificate issued for {}",
        printable(name)
    )];
    lines.extend(
        chain_pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from),
    );
    lines.push(String::from("2.0.0 End of certificates"));
    Reply::multi(250, lines)
}

/// Why an answer is not a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// The relay refused; its reply, as one line of text.
    Refused(String),
    /// A `250` whose shape is not an issued certificate.
    Malformed,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Refused(text) => write!(f, "the relay refused: {text}"),
            AnswerError::Malformed => f.write_str("the relay's answer holds no certificate"),
        }
    }
}

/// The PEM text of an answer: the laptop's certificate, then the CA's.
pub fn parse_answer(reply: &Reply) -> Result<String, AnswerError> {
    if !reply.is_positive() {
        let text: Vec<&str> = reply.lines.iter().map(String::as_str).collect();
        return Err(AnswerError::Refused(alloc::format!(
            "{} {}",
            reply.code,
            printable(&text.join(" "))
        )));
    }
    if reply.code != 250 || reply.lines.len() < 3 {
        return Err(AnswerError::Malformed);
    }
    let body = &reply.lines[1..reply.lines.len() - 1];
    if !body.first().is_some_and(|l| l.starts_with("-----BEGIN ")) {
        return Err(AnswerError::Malformed);
    }
    let mut pem = String::new();
    for line in body {
        pem.push_str(line);
        pem.push('\n');
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn code() -> Code {
        Code::new(b"relay certificate", Secret::from_bytes([1, 2, 3, 4, 5]))
    }

    #[test]
    fn a_code_reads_back_in_any_case_with_confusable_letters() {
        let c = code();
        let text = c.to_string();
        assert_eq!(text.len(), CODE_SYMBOLS + 3);
        assert_eq!(text.matches('-').count(), 3);
        assert_eq!(Code::parse(&text), Ok(c));
        assert_eq!(Code::parse(&text.to_ascii_lowercase()), Ok(c));
        let spoken = text.replace('0', "o").replace('1', "l").replace('-', " ");
        assert_eq!(Code::parse(&spoken), Ok(c));
        assert!(c.pins(b"relay certificate"));
        assert!(!c.pins(b"another certificate"));
        assert!(!text.contains(['I', 'L', 'O', 'U']));
    }

    #[test]
    fn the_secret_is_the_last_eight_symbols() {
        let c = code();
        let text = c.to_string().replace('-', "");
        assert_eq!(c.secret.to_string(), text[CODE_SYMBOLS - SECRET_SYMBOLS..]);
        assert_eq!(Secret::parse(&c.secret.to_string()), Ok(c.secret));
        assert_eq!(c.secret.to_bytes(), [1, 2, 3, 4, 5]);
        assert_eq!(alloc::format!("{:?}", c.secret), "Secret(..)");
    }

    #[test]
    fn bad_codes_are_refused() {
        assert_eq!(
            Code::parse("ABCDE-FGHJK"),
            Err(CodeError::Length { found: 10 })
        );
        assert_eq!(
            Code::parse("ABCDE-FGHJK-MNPQR-STVWU"),
            Err(CodeError::BadSymbol('U'))
        );
        assert_eq!(
            Code::parse("ABCDE-FGHJK-MNPQR-STVW*"),
            Err(CodeError::BadSymbol('*'))
        );
        assert!(Code::parse(&"A".repeat(200)).is_err());
        assert!(Code::parse("ABCDE-FGHJK-MNPQR-STVWé").is_err());
    }

    #[test]
    fn commands_parse() {
        let s = code().secret;
        assert_eq!(
            parse_command(&alloc::format!("enroll {s}")),
            Ok(Command::Enroll(s))
        );
        assert_eq!(parse_command("RENEW"), Ok(Command::Renew));
        assert_eq!(parse_command(""), Err(CommandError::Usage));
        assert_eq!(parse_command("RENEW now"), Err(CommandError::Usage));
        assert_eq!(parse_command("ENROLL"), Err(CommandError::BadSecret));
        assert_eq!(parse_command("ENROLL 123"), Err(CommandError::BadSecret));
        assert_eq!(parse_command("ENROLL a b"), Err(CommandError::Usage));
        assert_eq!(parse_command("FETCH"), Err(CommandError::Usage));
    }

    #[test]
    fn request_lines_read_back() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let lines = request_lines(&der);
        assert!(lines.iter().all(|l| l.len() <= REQUEST_LINE));
        let mut reader = RequestReader::new();
        let mut last = Step::More;
        for l in &lines {
            last = reader.line(l.as_bytes());
        }
        assert_eq!(last, Step::Done(Ok(der)));
    }

    fn feed(lines: &[&[u8]]) -> Step {
        let mut reader = RequestReader::new();
        let mut last = Step::More;
        for l in lines {
            last = reader.line(l);
        }
        last
    }

    #[test]
    fn bad_requests_are_read_to_the_dot_and_refused() {
        assert_eq!(
            feed(&[b"AAAA", b"!!!!", b"AAAA", b"."]),
            Step::Done(Err(RequestError::BadBase64))
        );
        assert_eq!(
            feed(&[b"AAA=AAAA", b"."]),
            Step::Done(Err(RequestError::BadBase64))
        );
        assert_eq!(
            feed(&[b"AAA", b"."]),
            Step::Done(Err(RequestError::BadBase64))
        );
        assert_eq!(feed(&[b"."]), Step::Done(Err(RequestError::Empty)));
        assert_eq!(feed(&[b"*"]), Step::Done(Err(RequestError::Cancelled)));
        assert_eq!(
            feed(&[b"\xff\xfe", b"."]),
            Step::Done(Err(RequestError::BadBase64))
        );
        let line = [b'A'; 500];
        let mut lines: Vec<&[u8]> = (0..20).map(|_| &line[..]).collect();
        assert_eq!(feed(&lines), Step::More);
        lines.push(b".");
        assert_eq!(feed(&lines), Step::Done(Err(RequestError::TooLarge)));
    }

    /// The one limit: a request of [`MAX_REQUEST_DER`] octets is read whole, one octet more
    /// is refused by the line reader already, never read whole and refused by the signer.
    #[test]
    fn the_request_limit_is_one_limit_in_der_octets() {
        let feed_der = |len: usize| {
            let der: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let lines = request_lines(&der);
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            (feed(&lines), der)
        };
        let (step, der) = feed_der(MAX_REQUEST_DER);
        assert_eq!(step, Step::Done(Ok(der)));
        for over in [MAX_REQUEST_DER + 1, MAX_REQUEST_DER + 3] {
            assert_eq!(feed_der(over).0, Step::Done(Err(RequestError::TooLarge)));
        }
    }

    #[test]
    fn base64_decodes_strictly() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbA=="), Some(b"hell".to_vec()));
        assert_eq!(decode_base64("aGVs"), Some(b"hel".to_vec()));
        assert_eq!(decode_base64("aGVsbA="), None);
        assert_eq!(decode_base64("a==="), None);
        assert_eq!(decode_base64("aG==bG8="), None);
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode_base64(&crate::dkim::base64(&data)), Some(data));
        }
    }

    #[test]
    fn an_issued_answer_reads_back_and_refusals_say_why() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let answer = EnrollAnswer::Issued {
            name: "alice".to_string(),
            chain_pem: pem.to_string(),
        };
        let reply = answer.reply();
        assert_eq!(reply.code, 250);
        assert_eq!(parse_answer(&reply), Ok(pem.to_string()));
        let refused = parse_answer(&EnrollAnswer::CodeRefused.reply());
        assert_eq!(
            refused,
            Err(AnswerError::Refused(
                "535 5.7.8 Enrollment code not accepted".to_string()
            ))
        );
        assert_eq!(
            parse_answer(&Reply::new(250, "2.0.0 Ok")),
            Err(AnswerError::Malformed)
        );
        assert!(EnrollAnswer::TooManyAttempts.reply().is_transient());
        let bad = EnrollAnswer::BadRequest("bad\r\nsignature".to_string()).reply();
        assert_eq!(
            bad.lines[0],
            "5.7.0 Certificate request refused: bad??signature"
        );
    }
}
