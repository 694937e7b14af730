//! The service extensions a server announced in its EHLO reply.

use crate::reply::Reply;

/// What the server offered. All false after HELO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920): MAIL, RCPT and DATA may go out in one batch.
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `None` when not offered, `Some(0)` when offered without a limit.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `XCERTRELAY`, this project's pairing and renewal extension (`crate::enroll`).
    pub xcertrelay: bool,
}

impl Capabilities {
    /// Reads the keyword lines of a positive EHLO reply; the first line is the server's
    /// greeting name and is skipped. Unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                // A limit that is not a number is treated as no announced limit.
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                crate::enroll::KEYWORD => caps.xcertrelay = true,
                _ => {}
            }
        }
        caps
    }

    /// The server's size limit, if it announced a non-zero one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn ehlo(lines: &[&str]) -> Capabilities {
        let lines: Vec<String> = lines.iter().map(|l| String::from(*l)).collect();
        Capabilities::from_ehlo(&Reply::multi(250, lines))
    }

    #[test]
    fn keywords_are_case_insensitive_and_first_line_is_skipped() {
        let caps = ehlo(&[
            "STARTTLS mx.example",
            "pipelining",
            "Size 10240000",
            "8BITMIME",
            "starttls",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "smtputf8",
            "xcertrelay",
        ]);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(10_240_000),
                eight_bit_mime: true,
                starttls: true,
                enhanced_status_codes: true,
                smtputf8: true,
                xcertrelay: true,
            }
        );
        assert_eq!(caps.size_limit(), Some(10_240_000));
    }

    #[test]
    fn greeting_line_alone_offers_nothing() {
        assert_eq!(ehlo(&["PIPELINING STARTTLS"]), Capabilities::default());
    }

    #[test]
    fn size_without_a_number_means_no_limit() {
        for line in ["SIZE", "SIZE 0", "SIZE lots"] {
            let caps = ehlo(&["mx", line]);
            assert_eq!(caps.size, Some(0), "{line}");
            assert_eq!(caps.size_limit(), None, "{line}");
        }
    }
}
