//! A balancer's PROXY protocol header on a listener with `smtpd_upstream_proxy_protocol =
//! haproxy`: read before anything else, within `smtpd_upstream_proxy_timeout`, and no byte
//! further, so that the SMTP dialogue or (in wrapper mode) the TLS handshake starts with the
//! client's first byte.
//!
//! The header itself is the core's ([`certrelay_core::proxy`]); here are the socket, the
//! timer, and [`Prefixed`], which hands back bytes read past the header in the same segment.
//! Not here: whether to trust the balancer (the listener's configuration says so), and
//! what the client's address is then used for (the session).

use certrelay_core::proxy::{self, Header, Parsed, ProxyError};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why a connection brought no usable header.
#[derive(Debug)]
pub enum ProxyFailure {
    /// Nothing, or not all of it, within the time limit.
    Timeout(Duration),
    /// The peer closed before the header was whole.
    Lost,
    /// Reading failed.
    Io(io::Error),
    /// The bytes are not a header (a client speaking SMTP or TLS directly, or garbage).
    Bad(ProxyError),
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFailure::Timeout(limit) => {
                write!(
                    f,
                    "timeout error: no whole header within {}s",
                    limit.as_secs()
                )
            }
            ProxyFailure::Lost => f.write_str("lost connection while reading the header"),
            ProxyFailure::Io(e) => write!(f, "read error: {e}"),
            ProxyFailure::Bad(e) => e.fmt(f),
        }
    }
}

/// Reads one header from `stream` within `limit`. Returns it with the bytes that came
/// after it in the same reads: the client's, to be read first (see [`Prefixed`]).
pub async fn read_header<S>(
    stream: &mut S,
    limit: Duration,
) -> Result<(Header, Vec<u8>), ProxyFailure>
where
    S: AsyncRead + Unpin,
{
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await.map_err(ProxyFailure::Io)?;
            if n == 0 {
                return Err(ProxyFailure::Lost);
            }
            buf.extend_from_slice(&chunk[..n]);
            match proxy::parse(&buf).map_err(ProxyFailure::Bad)? {
                Parsed::Incomplete => {}
                Parsed::Complete(header) => {
                    let rest = buf.split_off(header.len);
                    return Ok((header, rest));
                }
            }
        }
    };
    crate::io::with_timeout(limit, read)
        .await
        .unwrap_or(Err(ProxyFailure::Timeout(limit)))
}

/// A stream that yields `head` before what `inner` reads; writes go to `inner`.
pub struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `head` to be read first.
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Prefixed { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let left = &this.head[this.at..];
        if left.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        this.at += n;
        if this.at == this.head.len() {
            this.head = Vec::new();
            this.at = 0;
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    /// Forwarded whole: the TLS layer writes its records this way, and the default would
    /// take one buffer per call.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::proxy::{v2_header, Addresses};

    /// Bytes arriving in the pieces given, then the end of the stream.
    struct Pieces(Vec<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.0.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let piece = &mut this.0[0];
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                this.0.remove(0);
            }
            Poll::Ready(Ok(n))
        }
    }

    fn addresses() -> Addresses {
        Addresses {
            source: "192.0.2.7:40000".parse().unwrap(),
            destination: "127.0.0.1:465".parse().unwrap(),
        }
    }

    #[test]
    fn the_header_is_consumed_exactly_whatever_the_pieces() {
        let header = v2_header(Some(addresses()), &[]).unwrap();
        let hello = b"\x16\x03\x01\x00\x05hello".to_vec();
        let whole = [header.clone(), hello.clone()].concat();
        for cut in 1..whole.len() {
            let mut stream = Pieces(vec![whole[..cut].to_vec(), whole[cut..].to_vec()]);
            let (h, rest) =
                smol::block_on(read_header(&mut stream, Duration::from_secs(5))).unwrap();
            assert_eq!(h.addresses, Some(addresses()));
            let mut after = Vec::new();
            smol::block_on(Prefixed::new(rest, stream).read_to_end(&mut after)).unwrap();
            assert_eq!(after, hello, "cut {cut}");
        }
    }

    #[test]
    fn smtp_a_close_and_silence_bring_no_header() {
        let mut smtp = Pieces(vec![b"EHLO laptop\r\n".to_vec()]);
        let got = smol::block_on(read_header(&mut smtp, Duration::from_secs(5)));
        assert!(
            matches!(got, Err(ProxyFailure::Bad(ProxyError::NotProxy))),
            "{got:?}"
        );
        let mut cut = Pieces(vec![b"PROXY TCP4 192.0.2.7".to_vec()]);
        let got = smol::block_on(read_header(&mut cut, Duration::from_secs(5)));
        assert!(matches!(got, Err(ProxyFailure::Lost)), "{got:?}");
        let mut silent = Pending;
        let got = smol::block_on(read_header(&mut silent, Duration::from_millis(50)));
        assert!(matches!(got, Err(ProxyFailure::Timeout(_))), "{got:?}");
        assert!(got.unwrap_err().to_string().starts_with("timeout error"));
    }

    struct Pending;

    impl AsyncRead for Pending {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }
}
