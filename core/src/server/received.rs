//! The `Received:` header and the client's name as logs show it.
//!
//! The header is built from facts the session holds. Two parts are not known here: the
//! queue id (assigned when the shell creates the queue file) and the date (the core reads no
//! clock). [`Received::render`] takes both, so the shell writes the header once it has them.

use crate::facts::{CertVerdict, PeerInfo, TlsFacts};
use alloc::format;
use alloc::string::String;
use core::fmt;
use core::net::IpAddr;

/// Text safe to put into a header or a log line: printable ASCII kept, anything else `?`.
///
/// HELO names and certificate names come from the client; a CR LF in them must never start a
/// new header.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `name[ip]`, as Postfix logs a client.
pub struct ClientName<'a>(pub &'a PeerInfo);

impl fmt::Display for ClientName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0.name, self.0.addr)
    }
}

/// A `Received:` header, complete but for the queue id and the date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `Received: from ... by <host> (certrelay) with <proto>`, folded with CR LF TAB.
    head: String,
    /// The one recipient, named in `for <...>` when there is exactly one.
    single_recipient: Option<String>,
}

/// Facts that go into the header.
#[derive(Clone, Copy)]
pub struct ReceivedFacts<'a> {
    /// The client.
    pub peer: &'a PeerInfo,
    /// Its HELO/EHLO name, if it gave one.
    pub helo: Option<&'a str>,
    /// `SMTP`, `ESMTP` or `ESMTPS`.
    pub protocol: &'a str,
    /// The TLS session, if any.
    pub tls: Option<&'a TlsFacts>,
    /// `smtpd_tls_received_header`.
    pub tls_details: bool,
    /// `smtpd_tls_ask_ccert`.
    pub asked_ccert: bool,
    /// `myhostname`.
    pub myhostname: &'a str,
    /// The recipients; `for <...>` is added only when there is exactly one.
    pub recipients: &'a [String],
}

impl Received {
    /// Builds the header from the session's facts.
    pub fn new(facts: &ReceivedFacts<'_>) -> Self {
        let peer = facts.peer;
        let addr = match peer.addr {
            IpAddr::V4(a) => format!("{a}"),
            IpAddr::V6(a) => format!("IPv6:{a}"),
        };
        let helo = printable(facts.helo.unwrap_or(&peer.name));
        let mut head = format!("Received: from {helo} ({} [{addr}])", printable(&peer.name));
        if let (Some(tls), true) = (facts.tls, facts.tls_details) {
            head.push_str(&format!(
                "\r\n\t(using {} with cipher {} ({}/{} bits))",
                printable(&tls.protocol),
                printable(&tls.cipher),
                tls.bits,
                tls.bits
            ));
            head.push_str("\r\n\t");
            head.push_str(&client_cert_comment(tls, facts.asked_ccert));
        }
        head.push_str(&format!(
            "\r\n\tby {} (certrelay) with {}",
            facts.myhostname, facts.protocol
        ));
        let single_recipient = match facts.recipients {
            [one] => Some(one.clone()),
            _ => None,
        };
        Received {
            head,
            single_recipient,
        }
    }

    /// The whole header, ending in CR LF. `date` is RFC 5322 date-time text, written by the
    /// shell (`Mon, 1 Jan 2024 12:00:00 +0000 (UTC)`).
    pub fn render(&self, queue_id: Option<&str>, date: &str) -> String {
        let mut out = self.head.clone();
        if let Some(id) = queue_id {
            out.push_str(" id ");
            out.push_str(&printable(id));
        }
        if let Some(rcpt) = &self.single_recipient {
            out.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        out.push_str(&format!("; {}\r\n", printable(date)));
        out
    }
}

/// `(Client CN "...", Issuer "..." (verified OK))` and its other forms.
fn client_cert_comment(tls: &TlsFacts, asked: bool) -> String {
    let cert = &tls.client_cert;
    let verified = match &cert.verdict {
        CertVerdict::Absent if asked => {
            return String::from("(Client did not present a certificate)")
        }
        CertVerdict::Absent => return String::from("(No client certificate requested)"),
        CertVerdict::Untrusted(_) => "not verified",
        CertVerdict::Trusted => "verified OK",
    };
    let name = |n: &Option<String>| quoted(n.as_deref().unwrap_or(""));
    format!(
        "(Client CN \"{}\", Issuer \"{}\" ({verified}))",
        name(&cert.subject_cn),
        name(&cert.issuer_cn)
    )
}

/// A certificate name fit for the inside of a quoted comment.
fn quoted(s: &str) -> String {
    printable(s).replace(['"', '\\', '(', ')'], "?")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::ClientCert;
    use alloc::vec;

    fn tls(verdict: CertVerdict) -> TlsFacts {
        TlsFacts {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            resumed: false,
            client_cert: ClientCert {
                verdict,
                listed: None,
                subject_cn: Some("laptop \"x\"\r\nBcc: y".into()),
                issuer_cn: Some("Example CA".into()),
            },
        }
    }

    #[test]
    fn header_forms() {
        let peer = PeerInfo {
            addr: "192.0.2.7".parse().unwrap(),
            name: "unknown".into(),
        };
        let v6 = PeerInfo {
            addr: "2001:db8::7".parse().unwrap(),
            name: "laptop.example".into(),
        };
        let trusted = tls(CertVerdict::Trusted);
        let untrusted = tls(CertVerdict::Untrusted("self-signed".into()));
        let absent = tls(CertVerdict::Absent);
        let one = vec![String::from("a@b.example")];
        let two = vec![String::from("a@b.example"), String::from("c@d.example")];
        let base = ReceivedFacts {
            peer: &peer,
            helo: Some("laptop"),
            protocol: "ESMTP",
            tls: None,
            tls_details: false,
            asked_ccert: true,
            myhostname: "relay.example",
            recipients: &one,
        };
        let table: &[(ReceivedFacts, Option<&str>, &str)] = &[
            (
                ReceivedFacts { ..base },
                Some("4AbC12"),
                "Received: from laptop (unknown [192.0.2.7])\r\n\tby relay.example (certrelay) with ESMTP id 4AbC12\r\n\tfor <a@b.example>; DATE\r\n",
            ),
            (
                ReceivedFacts { peer: &v6, helo: None, recipients: &two, protocol: "SMTP", ..base },
                None,
                "Received: from laptop.example (laptop.example [IPv6:2001:db8::7])\r\n\tby relay.example (certrelay) with SMTP; DATE\r\n",
            ),
            (
                ReceivedFacts { tls: Some(&trusted), protocol: "ESMTPS", ..base },
                None,
                "Received: from laptop (unknown [192.0.2.7])\r\n\tby relay.example (certrelay) with ESMTPS\r\n\tfor <a@b.example>; DATE\r\n",
            ),
            (
                ReceivedFacts { tls: Some(&trusted), tls_details: true, protocol: "ESMTPS", ..base },
                None,
                "Received: from laptop (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(Client CN \"laptop ?x???Bcc: y\", Issuer \"Example CA\" (verified OK))\r\n\tby relay.example (certrelay) with ESMTPS\r\n\tfor <a@b.example>; DATE\r\n",
            ),
            (
                ReceivedFacts { tls: Some(&untrusted), tls_details: true, protocol: "ESMTPS", recipients: &two, ..base },
                None,
                "Received: from laptop (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(Client CN \"laptop ?x???Bcc: y\", Issuer \"Example CA\" (not verified))\r\n\tby relay.example (certrelay) with ESMTPS; DATE\r\n",
            ),
            (
                ReceivedFacts { tls: Some(&absent), tls_details: true, protocol: "ESMTPS", recipients: &two, ..base },
                None,
                "Received: from laptop (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(Client did not present a certificate)\r\n\tby relay.example (certrelay) with ESMTPS; DATE\r\n",
            ),
            (
                ReceivedFacts { tls: Some(&absent), tls_details: true, asked_ccert: false, protocol: "ESMTPS", recipients: &two, ..base },
                None,
                "Received: from laptop (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(No client certificate requested)\r\n\tby relay.example (certrelay) with ESMTPS; DATE\r\n",
            ),
        ];
        for (facts, id, want) in table {
            assert_eq!(Received::new(facts).render(*id, "DATE"), *want);
        }
    }
}
