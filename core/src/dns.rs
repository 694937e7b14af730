//! A stub resolver without IO: DNS query messages out, typed answers in, and the choice of
//! mail servers for a domain.
//!
//! The shell sends [`Query::bytes`] over UDP to a name server from `resolv.conf`, feeds every
//! datagram that comes back to [`Query::handle_answer`] and acts on the result:
//! [`AnswerError::Mismatch`] means "not ours, keep waiting" (a late or forged datagram),
//! [`AnswerError::Truncated`] means "ask again over TCP" (with [`tcp_frame`] and
//! [`tcp_unframe`]), other errors are temporary failures of the lookup. [`mx_hosts`] turns an
//! MX answer into the host names to try, in order.
//!
//! The DNS message codec is simple-dns, whose API changes with every minor release; it is
//! used only inside this module, and none of its types appear in this module's API.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use simple_dns as sd;

/// The UDP payload size we announce (EDNS0) and the receive buffer the shell needs: large
/// enough for usual MX sets, small enough to avoid IP fragmentation (DNS flag day 2020).
pub const UDP_PAYLOAD_SIZE: u16 = 1232;

/// CNAME records followed before an answer is called malformed.
const MAX_CNAME_HOPS: usize = 8;

/// The record types a mail client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// Mail exchangers.
    Mx,
    /// The names of an address (under `in-addr.arpa` or `ip6.arpa`, see [`reverse_name`]).
    Ptr,
}

impl QueryType {
    /// The type's name as logs show it (`type=MX`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
            QueryType::Mx => "MX",
            QueryType::Ptr => "PTR",
        }
    }

    fn code(self) -> u16 {
        match self {
            QueryType::A => 1,
            QueryType::Aaaa => 28,
            QueryType::Mx => 15,
            QueryType::Ptr => 12,
        }
    }
}

/// A domain name that cannot be looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or only a dot.
    Empty,
    /// Longer than 253 characters.
    TooLong,
    /// A label empty (`a..b`) or longer than 63 characters.
    BadLabel,
    /// A character other than letters, digits, `-` and `_` (an internationalised name must
    /// be given in its ASCII `xn--` form).
    BadCharacter(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty domain name"),
            NameError::TooLong => f.write_str("domain name longer than 253 characters"),
            NameError::BadLabel => f.write_str("domain name has an empty label or one longer than 63 characters"),
            NameError::BadCharacter(c) => write!(f, "character {c:?} not allowed in a domain name (use the xn-- form for international names)"),
        }
    }
}

/// Why a datagram is not a usable answer to the query.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    /// Not an answer to this query (other id, other question, not a response): ignore it
    /// and keep waiting for the real one.
    Mismatch,
    /// The server cut the answer short: ask again over TCP.
    Truncated,
    /// The bytes are not a well-formed DNS message (or a CNAME chain is too long).
    Malformed,
    /// The server answered with this error code (SERVFAIL, REFUSED, ...): try again later.
    ServerFailure(u8),
}

impl AnswerError {
    /// The enhanced status for a lookup that failed this way (temporary: `4.4.3`).
    pub fn dsn(&self) -> &'static str {
        "4.4.3"
    }

    /// The reason logged and recorded for a lookup of `query` that failed this way.
    pub fn reason(&self, query: &Query) -> String {
        let what = match self {
            AnswerError::Malformed | AnswerError::Mismatch => {
                "Malformed or unexpected name server reply"
            }
            AnswerError::Truncated => "Name server reply truncated",
            AnswerError::ServerFailure(_) => "Host not found, try again",
        };
        alloc::format!(
            "Host or domain name not found. Name service error for name={} type={}: {what}",
            query.name,
            query.qtype.as_str()
        )
    }
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Mismatch => f.write_str("reply does not match the query"),
            AnswerError::Truncated => f.write_str("reply truncated, retry over TCP"),
            AnswerError::Malformed => f.write_str("malformed name server reply"),
            AnswerError::ServerFailure(rcode) => write!(f, "name server error (rcode {rcode})"),
        }
    }
}

/// One mail exchanger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is tried first.
    pub preference: u16,
    /// Host name, lower case, without the final dot; empty for the root (a "null MX").
    pub exchange: String,
}

/// A usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// MX records (for an MX query), sorted by preference, ties in answer order; never empty.
    Mx(Vec<MxRecord>),
    /// Addresses (for an A or AAAA query), in answer order; never empty.
    Addresses(Vec<IpAddr>),
    /// Host names (for a PTR query), lower case, in answer order; never empty.
    Names(Vec<String>),
    /// The name exists but has no record of the type asked for.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// The name under which the DNS keeps the names of `addr`: `4.3.2.1.in-addr.arpa` for
/// 1.2.3.4, one label per hexadecimal digit, last first, under `ip6.arpa` for IPv6.
pub fn reverse_name(addr: IpAddr) -> String {
    use core::fmt::Write as _;
    let mut name = String::new();
    match addr {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let _ = write!(name, "{octet}.");
            }
            name.push_str("in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            name.push_str("ip6.arpa");
        }
    }
    name
}

/// One question to a name server, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    id: u16,
    name: String,
    qtype: QueryType,
    wire: Vec<u8>,
}

impl Query {
    /// A recursive query for `name` (one trailing dot allowed) with message id `id`, which the
    /// shell draws at random for each query (it is the only defence against forged answers).
    pub fn new(id: u16, name: &str, qtype: QueryType) -> Result<Query, NameError> {
        let name = normalize_name(name)?;
        let wire = build_query(id, &name, qtype)?;
        Ok(Query {
            id,
            name,
            qtype,
            wire,
        })
    }

    /// The message id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The name asked for, lower case, without the final dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The record type asked for.
    pub fn qtype(&self) -> QueryType {
        self.qtype
    }

    /// The query message (for UDP as is; for TCP through [`tcp_frame`]).
    pub fn bytes(&self) -> &[u8] {
        &self.wire
    }

    /// Reads a reply. Never panics, whatever the bytes.
    pub fn handle_answer(&self, reply: &[u8]) -> Result<Answer, AnswerError> {
        let header = RawHeader::read(reply)?;
        if header.id != self.id || !header.is_response {
            return Err(AnswerError::Mismatch);
        }
        if header.truncated {
            return Err(AnswerError::Truncated);
        }
        if !header.counts_fit(reply.len()) {
            return Err(AnswerError::Malformed);
        }
        let packet = sd::Packet::parse(reply).map_err(|_| AnswerError::Malformed)?;
        if !self.asked_in(&packet) {
            return Err(AnswerError::Mismatch);
        }
        match header.rcode {
            0 => {}
            3 => return Ok(Answer::NxDomain),
            other => return Err(AnswerError::ServerFailure(other)),
        }
        let records: Vec<Record> = packet.answers.iter().filter_map(Record::from_rr).collect();
        self.follow_chain(&records)
    }

    /// True when the reply's question section is exactly this query's question.
    fn asked_in(&self, packet: &sd::Packet<'_>) -> bool {
        let [q] = packet.questions.as_slice() else {
            return false;
        };
        let qtype: u16 = q.qtype.into();
        let qclass: u16 = q.qclass.into();
        qtype == self.qtype.code()
            && qclass == 1
            && !q.unicast_response
            && name_text(&q.qname).as_deref() == Some(self.name.as_str())
    }

    /// Collects the records of the asked type at the end of the CNAME chain from the name.
    fn follow_chain(&self, records: &[Record]) -> Result<Answer, AnswerError> {
        let mut owner = self.name.as_str();
        for _ in 0..=MAX_CNAME_HOPS {
            let found: Vec<&Data> = records
                .iter()
                .filter(|r| r.owner == owner && r.data.is(self.qtype))
                .map(|r| &r.data)
                .collect();
            if !found.is_empty() {
                return Ok(collect(found));
            }
            match records.iter().find_map(|r| match &r.data {
                Data::Cname(target) if r.owner == owner => Some(target.as_str()),
                _ => None,
            }) {
                Some(target) => owner = target,
                None => return Ok(Answer::NoData),
            }
        }
        Err(AnswerError::Malformed)
    }
}

/// Builds the answer from the records found (all of one kind).
fn collect(found: Vec<&Data>) -> Answer {
    if let Some(Data::Mx(..)) = found.first() {
        let mut mx: Vec<MxRecord> = found
            .into_iter()
            .filter_map(|d| match d {
                Data::Mx(preference, exchange) => Some(MxRecord {
                    preference: *preference,
                    exchange: exchange.clone(),
                }),
                _ => None,
            })
            .collect();
        // Stable: equal preferences keep the server's order (the caller may shuffle them).
        mx.sort_by_key(|m| m.preference);
        return Answer::Mx(mx);
    }
    if let Some(Data::Ptr(_)) = found.first() {
        return Answer::Names(
            found
                .into_iter()
                .filter_map(|d| match d {
                    Data::Ptr(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        );
    }
    Answer::Addresses(
        found
            .into_iter()
            .filter_map(|d| match d {
                Data::Address(a) => Some(*a),
                _ => None,
            })
            .collect(),
    )
}

/// An answer record reduced to what a mail client uses; owner names in lower case.
struct Record {
    owner: String,
    data: Data,
}

enum Data {
    Cname(String),
    Mx(u16, String),
    Address(IpAddr),
    Ptr(String),
}

impl Data {
    fn is(&self, qtype: QueryType) -> bool {
        matches!(
            (self, qtype),
            (Data::Mx(..), QueryType::Mx)
                | (Data::Ptr(_), QueryType::Ptr)
                | (Data::Address(IpAddr::V4(_)), QueryType::A)
                | (Data::Address(IpAddr::V6(_)), QueryType::Aaaa)
        )
    }
}

impl Record {
    /// `None` for other classes and types, and for names no host could have.
    fn from_rr(rr: &sd::ResourceRecord<'_>) -> Option<Record> {
        if rr.class != sd::CLASS::IN {
            return None;
        }
        let data = match &rr.rdata {
            sd::rdata::RData::CNAME(c) => Data::Cname(name_text(&c.0)?),
            sd::rdata::RData::MX(mx) => Data::Mx(mx.preference, name_text(&mx.exchange)?),
            sd::rdata::RData::A(a) => Data::Address(IpAddr::V4(Ipv4Addr::from(a.address))),
            sd::rdata::RData::AAAA(a) => Data::Address(IpAddr::V6(Ipv6Addr::from(a.address))),
            sd::rdata::RData::PTR(p) => Data::Ptr(name_text(&p.0)?),
            _ => return None,
        };
        Some(Record {
            owner: name_text(&rr.name)?,
            data,
        })
    }
}

/// A name from the wire as lower-case text; `None` when a label holds a byte that has no
/// place in a host name (a dot inside a label would let an answer smuggle in another name).
fn name_text(name: &sd::Name<'_>) -> Option<String> {
    let mut out = String::new();
    for label in name.as_bytes() {
        if !out.is_empty() {
            out.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            out.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(out)
}

/// Checks a name for a query; returns it in lower case without the final dot.
fn normalize_name(name: &str) -> Result<String, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 253 {
        return Err(NameError::TooLong);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(NameError::BadCharacter(c));
    }
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(NameError::BadLabel);
    }
    Ok(name.to_ascii_lowercase())
}

fn build_query(id: u16, name: &str, qtype: QueryType) -> Result<Vec<u8>, NameError> {
    let qname = sd::Name::new(name).map_err(|_| NameError::BadLabel)?;
    let mut packet = sd::Packet::new_query(id);
    packet.set_flags(sd::PacketFlag::RECURSION_DESIRED);
    let rtype = match qtype {
        QueryType::A => sd::TYPE::A,
        QueryType::Aaaa => sd::TYPE::AAAA,
        QueryType::Mx => sd::TYPE::MX,
        QueryType::Ptr => sd::TYPE::PTR,
    };
    packet.questions.push(sd::Question::new(
        qname,
        rtype.into(),
        sd::CLASS::IN.into(),
        false,
    ));
    *packet.opt_mut() = Some(sd::rdata::OPT {
        opt_codes: Vec::new(),
        udp_packet_size: UDP_PAYLOAD_SIZE,
        version: 0,
    });
    packet.build_bytes_vec().map_err(|_| NameError::BadLabel)
}

/// The fixed 12-byte header, read before handing the message to the parser.
struct RawHeader {
    id: u16,
    is_response: bool,
    truncated: bool,
    rcode: u8,
    counts: [u16; 4],
}

impl RawHeader {
    fn read(m: &[u8]) -> Result<RawHeader, AnswerError> {
        let Some(h) = m.get(..12) else {
            return Err(AnswerError::Malformed);
        };
        let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let flags = word(2);
        Ok(RawHeader {
            id: word(0),
            is_response: flags & 0x8000 != 0,
            truncated: flags & 0x0200 != 0,
            rcode: (flags & 0x000f) as u8,
            counts: [word(4), word(6), word(8), word(10)],
        })
    }

    /// False when the section counts promise more records than the bytes could hold (a
    /// question takes at least 5 bytes, a record 11). Checked first because the parser
    /// reserves room for every promised record before reading any.
    fn counts_fit(&self, len: usize) -> bool {
        let [qd, an, ns, ar] = self.counts.map(usize::from);
        qd * 5 + (an + ns + ar) * 11 <= len.saturating_sub(12)
    }
}

/// A message with the two-byte length prefix DNS uses over TCP; `None` if it is longer than
/// 65535 bytes.
pub fn tcp_frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

/// The first complete message in bytes read from a TCP stream, and how many bytes it took
/// (prefix included); `None` while more bytes are needed.
pub fn tcp_unframe(buf: &[u8]) -> Option<(&[u8], usize)> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    let message = buf.get(2..2 + len)?;
    Some((message, 2 + len))
}

/// Why a domain has no mail server to try.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MxFailure {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx(String),
    /// The domain does not exist.
    NotFound(String),
    /// This host is the domain's best MX, so delivering would loop.
    LoopsToMyself(String),
}

impl MxFailure {
    /// The enhanced status; all of these are permanent.
    pub fn dsn(&self) -> &'static str {
        match self {
            MxFailure::NullMx(_) => "5.1.10",
            MxFailure::NotFound(_) => "5.4.4",
            MxFailure::LoopsToMyself(_) => "5.4.6",
        }
    }
}

impl fmt::Display for MxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxFailure::NullMx(d) => write!(f, "Domain {d} does not accept mail (nullMX)"),
            MxFailure::NotFound(d) => write!(
                f,
                "Host or domain name not found. Name service error for name={d} type=MX: Host not found"
            ),
            MxFailure::LoopsToMyself(d) => write!(f, "mail for {d} loops back to myself"),
        }
    }
}

/// The hosts to try, in order, for mail to `domain`, given the answer to its MX query.
///
/// - MX records: their exchanges by preference, each once. Null-MX entries (the root) mixed
///   with real ones are skipped; only null MX means the domain takes no mail. When
///   `myhostname` is among them, only hosts strictly preferred to it are kept (RFC 5321
///   section 5.1); none left means the mail would loop.
/// - No MX (no data): the domain itself, whose A/AAAA records are then used (implicit MX).
/// - The domain does not exist: a permanent failure.
pub fn mx_hosts(domain: &str, answer: &Answer, myhostname: &str) -> Result<Vec<String>, MxFailure> {
    let domain = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let records = match answer {
        Answer::NxDomain => return Err(MxFailure::NotFound(domain)),
        Answer::Mx(records) if !records.is_empty() => records,
        Answer::Mx(_) | Answer::NoData | Answer::Addresses(_) | Answer::Names(_) => {
            return Ok(alloc::vec![domain])
        }
    };
    let mut usable: Vec<&MxRecord> = records.iter().filter(|r| !r.exchange.is_empty()).collect();
    usable.sort_by_key(|r| r.preference);
    if usable.is_empty() {
        return Err(MxFailure::NullMx(domain));
    }
    let me = myhostname.strip_suffix('.').unwrap_or(myhostname);
    if let Some(own) = usable
        .iter()
        .filter(|r| r.exchange.eq_ignore_ascii_case(me))
        .map(|r| r.preference)
        .min()
    {
        usable.retain(|r| r.preference < own);
        if usable.is_empty() {
            return Err(MxFailure::LoopsToMyself(domain));
        }
    }
    let mut hosts: Vec<String> = Vec::with_capacity(usable.len());
    for r in usable {
        if !hosts.contains(&r.exchange) {
            hosts.push(r.exchange.clone());
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sd::rdata::RData;
    use std::string::ToString;
    use std::vec;

    /// A reply to `q` built with simple-dns: answers as (owner, data).
    fn reply(q: &Query, answers: Vec<(&str, RData<'static>)>) -> sd::Packet<'static> {
        let mut p = sd::Packet::new_reply(q.id());
        p.set_flags(sd::PacketFlag::RECURSION_DESIRED | sd::PacketFlag::RECURSION_AVAILABLE);
        let rtype = match q.qtype() {
            QueryType::A => sd::TYPE::A,
            QueryType::Aaaa => sd::TYPE::AAAA,
            QueryType::Mx => sd::TYPE::MX,
            QueryType::Ptr => sd::TYPE::PTR,
        };
        let qname = sd::Name::new(q.name()).unwrap().into_owned();
        p.questions.push(sd::Question::new(
            qname,
            rtype.into(),
            sd::CLASS::IN.into(),
            false,
        ));
        for (owner, data) in answers {
            let owner = sd::Name::new(owner).unwrap().into_owned();
            p.answers
                .push(sd::ResourceRecord::new(owner, sd::CLASS::IN, 300, data));
        }
        p
    }

    fn name(n: &'static str) -> sd::Name<'static> {
        sd::Name::new(n).unwrap()
    }

    fn mx(pref: u16, host: &'static str) -> RData<'static> {
        RData::MX(sd::rdata::MX {
            preference: pref,
            exchange: name(host),
        })
    }

    fn cname(target: &'static str) -> RData<'static> {
        RData::CNAME(sd::rdata::CNAME(name(target)))
    }

    fn a(ip: [u8; 4]) -> RData<'static> {
        RData::A(sd::rdata::A::from(Ipv4Addr::from(ip)))
    }

    fn bytes(p: &sd::Packet<'_>) -> Vec<u8> {
        p.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn ptr_answer_gives_the_names() {
        let owner = reverse_name("192.0.2.10".parse().unwrap());
        let q = Query::new(7, &owner, QueryType::Ptr).unwrap();
        let ptr = |n: &'static str| RData::PTR(sd::rdata::PTR(name(n)));
        let r = reply(
            &q,
            vec![
                (owner.as_str(), ptr("Laptop.Example.NET")),
                (owner.as_str(), ptr("b.example")),
            ],
        );
        assert_eq!(
            q.handle_answer(&bytes(&r)),
            Ok(Answer::Names(vec![
                "laptop.example.net".to_string(),
                "b.example".to_string()
            ]))
        );
        // Records of another type are not names.
        let r = reply(&q, vec![(owner.as_str(), a([192, 0, 2, 1]))]);
        assert_eq!(q.handle_answer(&bytes(&r)), Ok(Answer::NoData));
    }

    #[test]
    fn query_message_shape() {
        let q = Query::new(0xBEEF, "Example.COM.", QueryType::Mx).unwrap();
        assert_eq!(q.name(), "example.com");
        let b = q.bytes();
        assert_eq!(
            &b[..4],
            &[0xBE, 0xEF, 0x01, 0x00],
            "id, RD set, nothing else"
        );
        assert_eq!(
            &b[4..12],
            &[0, 1, 0, 0, 0, 0, 0, 1],
            "one question, one OPT"
        );
        let p = sd::Packet::parse(b).unwrap();
        assert_eq!(p.questions[0].qname.to_string(), "example.com");
        assert_eq!(u16::from(p.questions[0].qtype), 15);
        assert_eq!(p.opt().map(|o| o.udp_packet_size), Some(UDP_PAYLOAD_SIZE));
        assert_eq!(
            u16::from(
                sd::Packet::parse(Query::new(1, "a.b", QueryType::Aaaa).unwrap().bytes())
                    .unwrap()
                    .questions[0]
                    .qtype
            ),
            28
        );

        let bad = [
            ("", NameError::Empty),
            (".", NameError::Empty),
            ("a..b", NameError::BadLabel),
            ("bücher.example", NameError::BadCharacter('ü')),
            ("a b", NameError::BadCharacter(' ')),
        ];
        for (n, e) in bad {
            assert_eq!(Query::new(1, n, QueryType::A), Err(e), "{n:?}");
        }
        assert_eq!(
            Query::new(1, &"a".repeat(64), QueryType::A),
            Err(NameError::BadLabel)
        );
        assert_eq!(
            Query::new(1, &std::format!("{}a", "a.".repeat(127)), QueryType::A),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn mx_sorted_by_preference_ties_keep_order() {
        let q = Query::new(7, "example.net", QueryType::Mx).unwrap();
        let p = reply(
            &q,
            vec![
                ("example.net", mx(20, "b.example.net")),
                ("EXAMPLE.net", mx(10, "A.example.net")),
                ("example.net", mx(20, "c.example.net")),
                ("example.net", mx(5, "d.example.net")),
                ("other.example", mx(1, "x.example")),
            ],
        );
        let got = q.handle_answer(&bytes(&p)).unwrap();
        let Answer::Mx(list) = &got else {
            panic!("{got:?}")
        };
        let flat: Vec<(u16, &str)> = list
            .iter()
            .map(|m| (m.preference, m.exchange.as_str()))
            .collect();
        assert_eq!(
            flat,
            [
                (5, "d.example.net"),
                (10, "a.example.net"),
                (20, "b.example.net"),
                (20, "c.example.net")
            ]
        );
        assert_eq!(
            mx_hosts("example.net", &got, "relay.example.org").unwrap(),
            [
                "d.example.net",
                "a.example.net",
                "b.example.net",
                "c.example.net"
            ]
        );
    }

    #[test]
    fn cname_chains_are_followed() {
        let q = Query::new(9, "www.example.org", QueryType::A).unwrap();
        let p = reply(
            &q,
            vec![
                ("www.example.org", cname("web.example.org")),
                ("web.example.org", cname("host.example.com")),
                ("host.example.com", a([192, 0, 2, 1])),
                ("host.example.com", a([192, 0, 2, 2])),
                ("decoy.example.com", a([203, 0, 113, 9])),
            ],
        );
        assert_eq!(
            q.handle_answer(&bytes(&p)),
            Ok(Answer::Addresses(vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap()
            ]))
        );
        // A chain to nowhere is "no data"; a loop is malformed.
        let p = reply(&q, vec![("www.example.org", cname("web.example.org"))]);
        assert_eq!(q.handle_answer(&bytes(&p)), Ok(Answer::NoData));
        let p = reply(
            &q,
            vec![
                ("www.example.org", cname("web.example.org")),
                ("web.example.org", cname("www.example.org")),
            ],
        );
        assert_eq!(q.handle_answer(&bytes(&p)), Err(AnswerError::Malformed));
        // MX behind a CNAME.
        let q = Query::new(9, "alias.example", QueryType::Mx).unwrap();
        let p = reply(
            &q,
            vec![
                ("alias.example", cname("real.example")),
                ("real.example", mx(0, "mx.real.example")),
            ],
        );
        assert_eq!(
            q.handle_answer(&bytes(&p)),
            Ok(Answer::Mx(vec![MxRecord {
                preference: 0,
                exchange: "mx.real.example".into()
            }]))
        );
    }

    #[test]
    fn aaaa_answers() {
        let q = Query::new(3, "v6.example", QueryType::Aaaa).unwrap();
        let ip: Ipv6Addr = "2001:db8::25".parse().unwrap();
        let p = reply(
            &q,
            vec![
                ("v6.example", RData::AAAA(sd::rdata::AAAA::from(ip))),
                ("v6.example", a([192, 0, 2, 1])),
            ],
        );
        assert_eq!(
            q.handle_answer(&bytes(&p)),
            Ok(Answer::Addresses(vec![IpAddr::V6(ip)]))
        );
    }

    #[test]
    fn rcodes_flags_and_mismatches() {
        let q = Query::new(0x1234, "example.com", QueryType::Mx).unwrap();
        let mut nx = reply(&q, vec![]);
        *nx.rcode_mut() = sd::RCODE::NameError;
        assert_eq!(q.handle_answer(&bytes(&nx)), Ok(Answer::NxDomain));
        assert_eq!(
            q.handle_answer(&bytes(&reply(&q, vec![]))),
            Ok(Answer::NoData)
        );

        for (rcode, n) in [
            (sd::RCODE::ServerFailure, 2),
            (sd::RCODE::Refused, 5),
            (sd::RCODE::FormatError, 1),
        ] {
            let mut p = reply(&q, vec![]);
            *p.rcode_mut() = rcode;
            assert_eq!(
                q.handle_answer(&bytes(&p)),
                Err(AnswerError::ServerFailure(n))
            );
        }
        let e = AnswerError::ServerFailure(2);
        assert_eq!(e.dsn(), "4.4.3");
        assert!(e
            .reason(&q)
            .ends_with("name=example.com type=MX: Host not found, try again"));

        let mut tc = reply(&q, vec![("example.com", mx(1, "mx.example.com"))]);
        tc.set_flags(sd::PacketFlag::TRUNCATION);
        let mut cut = bytes(&tc);
        cut.truncate(20);
        assert_eq!(q.handle_answer(&cut), Err(AnswerError::Truncated));

        let mut other_id = reply(&q, vec![("example.com", mx(1, "mx.example.com"))]);
        other_id.set_id(0x1235);
        assert_eq!(
            q.handle_answer(&bytes(&other_id)),
            Err(AnswerError::Mismatch)
        );
        let other_name = Query::new(0x1234, "example.org", QueryType::Mx).unwrap();
        assert_eq!(
            other_name.handle_answer(&bytes(&reply(&q, vec![]))),
            Err(AnswerError::Mismatch)
        );
        let other_type = Query::new(0x1234, "example.com", QueryType::A).unwrap();
        assert_eq!(
            other_type.handle_answer(&bytes(&reply(&q, vec![]))),
            Err(AnswerError::Mismatch)
        );
        // Our own query echoed back is not a response.
        assert_eq!(q.handle_answer(q.bytes()), Err(AnswerError::Mismatch));
        // Short or lying about its counts.
        assert_eq!(
            q.handle_answer(&[0x12, 0x34, 0x80]),
            Err(AnswerError::Malformed)
        );
        let mut liar = bytes(&reply(&q, vec![]));
        liar[6] = 0xFF;
        assert_eq!(q.handle_answer(&liar), Err(AnswerError::Malformed));
    }

    #[test]
    fn odd_bytes_in_names_are_not_hosts() {
        let q = Query::new(5, "example.com", QueryType::Mx).unwrap();
        let dotted = sd::Name::new_with_labels(&[
            sd::Label::new(b"evil.example".to_vec()).unwrap(),
            sd::Label::new(b"com".to_vec()).unwrap(),
        ]);
        let p = reply(
            &q,
            vec![
                (
                    "example.com",
                    RData::MX(sd::rdata::MX {
                        preference: 1,
                        exchange: dotted,
                    }),
                ),
                ("example.com", mx(2, "good.example.com")),
            ],
        );
        assert_eq!(
            q.handle_answer(&bytes(&p)),
            Ok(Answer::Mx(vec![MxRecord {
                preference: 2,
                exchange: "good.example.com".into()
            }]))
        );
    }

    #[test]
    fn next_hop_choice() {
        let rec = |p, h: &str| MxRecord {
            preference: p,
            exchange: h.into(),
        };
        let me = "relay.example.org";
        assert_eq!(
            mx_hosts("Example.NET.", &Answer::NoData, me),
            Ok(vec!["example.net".into()])
        );
        assert_eq!(
            mx_hosts("example.net", &Answer::Mx(vec![]), me),
            Ok(vec!["example.net".into()])
        );
        let nx = mx_hosts("nowhere.example", &Answer::NxDomain, me).unwrap_err();
        assert_eq!(nx.dsn(), "5.4.4");
        assert!(std::format!("{nx}").contains("name=nowhere.example type=MX: Host not found"));

        let null = mx_hosts("example.net", &Answer::Mx(vec![rec(0, "")]), me).unwrap_err();
        assert_eq!(null, MxFailure::NullMx("example.net".into()));
        assert_eq!(
            (null.dsn(), std::format!("{null}").as_str()),
            ("5.1.10", "Domain example.net does not accept mail (nullMX)")
        );
        assert_eq!(
            mx_hosts(
                "e.net",
                &Answer::Mx(vec![rec(0, ""), rec(10, "mx.e.net")]),
                me
            ),
            Ok(vec!["mx.e.net".into()])
        );

        let with_me = Answer::Mx(vec![
            rec(5, "a.e.net"),
            rec(10, "relay.example.org"),
            rec(10, "b.e.net"),
            rec(20, "c.e.net"),
            rec(7, "a.e.net"),
        ]);
        assert_eq!(
            mx_hosts("e.net", &with_me, "Relay.Example.org."),
            Ok(vec!["a.e.net".into()])
        );
        let best_is_me = Answer::Mx(vec![rec(1, "relay.example.org"), rec(2, "b.e.net")]);
        assert_eq!(
            mx_hosts("e.net", &best_is_me, me).map_err(|e| e.dsn()),
            Err("5.4.6")
        );
    }

    #[test]
    fn tcp_framing() {
        let q = Query::new(1, "example.com", QueryType::Mx).unwrap();
        let framed = tcp_frame(q.bytes()).unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([framed[0], framed[1]])),
            q.bytes().len()
        );
        for cut in 0..framed.len() {
            assert_eq!(tcp_unframe(&framed[..cut]), None, "cut {cut}");
        }
        let mut two = framed.clone();
        two.extend_from_slice(&[0, 1, 9, 0xAA]);
        assert_eq!(tcp_unframe(&two), Some((q.bytes(), framed.len())));
        assert_eq!(tcp_unframe(&two[framed.len()..]), Some((&[9u8][..], 3)));
        assert!(tcp_frame(&[0; 65_536]).is_none());
        assert_eq!(tcp_frame(&[]).unwrap(), [0, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn answer_parser_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512), rcode in 0u8..16, flags in any::<u8>()) {
            let q = Query::new(0x4242, "example.com", QueryType::Mx).unwrap();
            // Half the time give it a header that passes the id check, to reach the parser.
            let mut m = vec![0x42, 0x42, 0x80 | (flags & 0x7D), rcode];
            m.extend_from_slice(&tail);
            let _ = q.handle_answer(&m);
            let _ = q.handle_answer(&tail);
        }

        #[test]
        fn damaged_answers_never_panic(flip in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
            let q = Query::new(0x4242, "example.com", QueryType::Mx).unwrap();
            let p = reply(&q, vec![("example.com", mx(1, "mx.example.com")), ("example.com", cname("x.example.com"))]);
            let mut m = bytes(&p);
            let n = m.len();
            m[flip % n] = byte;
            m.truncate(cut % (n + 1));
            let _ = q.handle_answer(&m);
        }

        #[test]
        fn any_valid_name_builds_a_query(labels in proptest::collection::vec("[a-z0-9_-]{1,20}", 1..6), id in any::<u16>()) {
            let name = labels.join(".");
            let q = Query::new(id, &name, QueryType::A).unwrap();
            let p = sd::Packet::parse(q.bytes()).unwrap();
            prop_assert_eq!(p.id(), id);
            prop_assert_eq!(name_text(&p.questions[0].qname), Some(name));
        }
    }
}
