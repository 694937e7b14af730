//! SMTP replies: a code, optional enhanced status, text lines.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One SMTP reply, possibly multi-line (`250-...` then `250 ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code (200..=599).
    pub code: u16,
    /// The text of each line, without the code, separator or CR LF. Never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply. `text` normally starts with the enhanced status (`5.7.1 ...`).
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            lines: alloc::vec![text.into()],
        }
    }

    /// A multi-line reply; an empty `lines` becomes one empty line.
    pub fn multi(code: u16, lines: Vec<String>) -> Self {
        let lines = if lines.is_empty() {
            alloc::vec![String::new()]
        } else {
            lines
        };
        Reply { code, lines }
    }

    /// 2 for success, 3 for intermediate, 4 for temporary and 5 for permanent failure.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// True for 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// True for 4xx.
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// True for 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The enhanced status code (`X.Y.Z`) at the start of the first line, if there is one
    /// whose class agrees with the reply code.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let word = first.split(' ').next()?;
        let mut parts = word.split('.');
        let class = parts.next()?;
        let ok = class.len() == 1
            && class.as_bytes()[0] == b'0' + self.class()
            && matches!(class, "2" | "4" | "5")
            && parts.clone().count() == 2
            && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(word)
    }

    /// Appends the wire form, CR LF after every line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { b' ' } else { b'-' };
            let code = self.code.min(999);
            out.extend_from_slice(&[
                b'0' + (code / 100) as u8,
                b'0' + (code / 10 % 10) as u8,
                b'0' + (code % 10) as u8,
                sep,
            ]);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// One line, as logs show replies: `554 5.7.1 <a@b>: Relay access denied`; lines joined by
/// a space.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn wire_form_single_and_multi() {
        assert_eq!(Reply::new(250, "2.0.0 Ok").to_bytes(), b"250 2.0.0 Ok\r\n");
        let r = Reply::multi(
            250,
            vec!["mx.example".into(), "PIPELINING".into(), "8BITMIME".into()],
        );
        assert_eq!(
            r.to_bytes(),
            b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        assert_eq!(Reply::multi(220, vec![]).to_bytes(), b"220 \r\n");
    }

    #[test]
    fn enhanced_code_must_agree_with_class() {
        assert_eq!(
            Reply::new(554, "5.7.1 <a@b>: Relay access denied").enhanced(),
            Some("5.7.1")
        );
        assert_eq!(Reply::new(250, "2.1.5 Ok").enhanced(), Some("2.1.5"));
        assert_eq!(Reply::new(250, "5.1.5 Ok").enhanced(), None);
        assert_eq!(Reply::new(220, "mx.example ESMTP").enhanced(), None);
        assert_eq!(Reply::new(421, "4.7.0").enhanced(), Some("4.7.0"));
        assert_eq!(Reply::new(421, "4.x.0 no").enhanced(), None);
    }

    #[test]
    fn display_joins_lines() {
        let r = Reply::multi(550, vec!["5.1.1 one".into(), "two".into()]);
        assert_eq!(r.to_string(), "550 5.1.1 one two");
        assert!(r.is_permanent() && !r.is_transient() && !r.is_positive());
    }
}
