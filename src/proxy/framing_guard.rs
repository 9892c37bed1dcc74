//! Refuses HTTP/1 requests whose body framing is ambiguous.
//!
//! A request head that carries both `Content-Length` and `Transfer-Encoding`
//! is the classic request-smuggling shape. hyper's server accepts it (it drops
//! `Content-Length`, uses chunked framing and closes the connection
//! afterwards, as RFC 9112 §6.1 allows), but the product promises a `400`, a
//! closed connection and nothing sent upstream.
//!
//! [`FramingGuard`] wraps the client connection below hyper. It follows the
//! request stream head by head, computes each body's length the way RFC 9112
//! §6.3 (and hyper) does, and when a head is ambiguous it rewrites one byte of
//! that head before hyper sees it, so hyper fails to parse the head, answers
//! `400 Bad Request` on its own, closes the connection, and never calls the
//! service.
//!
//! The rewrite turns the request line's `HTTP/1.1` (or `HTTP/1.0`) into
//! `HTTP/1.x`. httparse compares the version as exactly eight bytes against
//! `HTTP/1.0` and `HTTP/1.1` and returns `Error::Version` for anything else.
//! No `ParserConfig` option relaxes that check, and hyper maps
//! `Parse::Version` to `400 Bad Request` for servers. Rewriting the `:` after
//! the header name instead would be weaker: with
//! `http1::Builder::ignore_invalid_headers(true)` httparse skips an invalid
//! header line, so hyper would drop `Transfer-Encoding` and frame the body by
//! `Content-Length`, which is exactly the desync the guard exists to prevent.
//!
//! Heads with `Upgrade` or `CONNECT` are guarded like any other. hyper only
//! switches protocols when the service answers `101` (or `2xx` to
//! `CONNECT`), and the proxy strips `Upgrade` and never does; otherwise hyper
//! keeps reading requests on the same connection, so passing through after
//! such a head would let a client switch the guard off with one header.
//!
//! The guard is only as strict as the server it protects: it parses heads
//! with httparse's default configuration and at most [`MAX_HEADERS`] headers,
//! which are hyper's defaults. Whenever it meets something it cannot follow
//! (not HTTP/1, a malformed chunk line, a head hyper itself will refuse, a
//! head past [`MAX_HEAD_BYTES`]), it stops guarding and passes bytes through,
//! because in each of those cases hyper rejects the connection by itself.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request head the guard holds back: hyper's default
/// `max_buf_size` (8 KiB + 100 × 4 KiB). hyper answers a longer head with 431,
/// so giving up on it here lets nothing ambiguous through. A server
/// configured with a larger buffer needs a larger cap.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// How many headers one head may carry: hyper's default `max_headers`. A head
/// with more fails httparse here and in hyper alike (hyper answers 431).
pub const MAX_HEADERS: usize = 100;

/// Heads up to this size are parsed on every read, so garbage is recognised
/// (and released to hyper) early. Longer partial heads are only re-parsed
/// when a blank line shows up, which keeps a head trickled in one byte at a
/// time from costing quadratic parsing work.
const EAGER_PARSE_BYTES: usize = 4096;

/// How much is read from the inner stream at a time while guarding.
const READ_CHUNK: usize = 8192;

/// The byte that replaces the version's minor digit in an ambiguous head.
const POISONED_VERSION_DIGIT: u8 = b'x';

/// What a client speaking HTTP/2 with prior knowledge sends first
/// (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project! {
    /// A transparent read/write wrapper for a server-side HTTP/1 connection
    /// that makes hyper reject any request carrying both `Content-Length`
    /// and `Transfer-Encoding`.
    ///
    /// Bytes come out exactly as they went in, except for one byte of each
    /// ambiguous head (see the module docs). While a head is incomplete its
    /// bytes are held back, so hyper never parses a head the guard has not
    /// checked; body bytes pass straight through. Writes are not touched.
    #[derive(Debug)]
    pub struct FramingGuard<T> {
        #[pin]
        inner: T,
        // Bytes read from `inner` and not yet handed out. `buf[..ready]`
        // has been checked and may be returned; `buf[ready..]` is the start
        // of a head that is not complete yet.
        buf: BytesMut,
        ready: usize,
        state: State,
    }
}

/// Where the guard is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a complete head. `scanned` is how many bytes of it were
    /// already searched for a blank line.
    Head { scanned: usize },
    /// Inside a `Content-Length` body.
    Fixed { remaining: u64 },
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not guarding any more; hyper decides.
    PassThrough,
}

/// Position inside a chunked body, mirroring hyper's `ChunkedState` so the
/// guard and hyper agree on where the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size { size: u64 },
    SizeLws { size: u64 },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

/// What one look at the pending head found.
enum HeadStep {
    /// More bytes are needed.
    Partial,
    /// A head of this many bytes, followed by a body framed as `next`.
    Complete { len: usize, next: State },
    /// A head of this many bytes that is ambiguous and must be poisoned.
    Ambiguous { len: usize },
    /// Not something the guard can follow; hyper decides from here on.
    GiveUp,
}

/// What one byte of chunked framing did.
enum ChunkStep {
    Next(Chunk),
    Done,
    Invalid,
}

/// Whether a request head carries both `Content-Length` and
/// `Transfer-Encoding` (names compared case-insensitively, any number of
/// each), the combination the proxy refuses with 400.
pub fn is_ambiguous(headers: &[httparse::Header<'_>]) -> bool {
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    has("content-length") && has("transfer-encoding")
}

// === impl FramingGuard ===

impl<T> FramingGuard<T> {
    /// Wraps the server side of a fresh client connection; the first bytes
    /// read are expected to start a request head.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            ready: 0,
            state: State::Head { scanned: 0 },
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Gives the wrapped stream back, dropping bytes read but not yet
    /// handed out.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> FramingGuard<T> {
    /// Reads until the first bytes show whether the client opens with the
    /// HTTP/2 preface, keeping every byte for the server that follows.
    ///
    /// Choosing the protocol here, rather than by a server that reads a
    /// few bytes and replays them, lets the HTTP/1 server's first read take
    /// the whole request at once: a replayed prefix makes it read twice and
    /// double its buffer for every connection. End of stream counts as not
    /// HTTP/2; the server then sees the end itself.
    pub async fn starts_with_h2_preface(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_sniff(cx)).await
    }

    fn poll_sniff(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut this = self.project();
        loop {
            let seen = this.buf.len().min(H2_PREFACE.len());
            if this.buf[..seen] != H2_PREFACE[..seen] {
                return Poll::Ready(Ok(false));
            }
            if seen == H2_PREFACE.len() {
                return Poll::Ready(Ok(true));
            }
            if ready!(poll_fill(this.inner.as_mut(), cx, this.buf))? == 0 {
                return Poll::Ready(Ok(false));
            }
            advance(this.buf, this.ready, this.state);
        }
    }
}

impl<T: AsyncRead> AsyncRead for FramingGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if *this.ready > 0 {
                let n = (*this.ready).min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                *this.ready -= n;
                if this.buf.is_empty() {
                    // An idle keep-alive connection (or one whose response
                    // is still streaming) holds no buffer.
                    *this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if *this.state == State::PassThrough && this.buf.is_empty() {
                return this.inner.as_mut().poll_read(cx, out);
            }

            let filled = ready!(poll_fill(this.inner.as_mut(), cx, this.buf))?;
            if filled == 0 {
                // End of stream: release what is held so hyper sees the
                // truncated head (and fails it) rather than a silent EOF.
                *this.state = State::PassThrough;
                *this.ready = this.buf.len();
                if *this.ready == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            advance(this.buf, this.ready, this.state);
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for FramingGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Reads once from `inner` and appends what came to `buf`; returns how many
/// bytes that was (0 at the end of the stream).
fn poll_fill<T: AsyncRead>(
    inner: Pin<&mut T>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    // Read on the stack first, so a connection waiting for its next
    // request does not keep a buffer allocated.
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut chunk = ReadBuf::uninit(&mut chunk);
    ready!(inner.poll_read(cx, &mut chunk))?;
    buf.extend_from_slice(chunk.filled());
    Poll::Ready(Ok(chunk.filled().len()))
}

/// Moves `ready` forward over every byte of `buf` that can be judged now,
/// poisoning ambiguous heads on the way. Stops with `buf[ready..]` holding
/// only an incomplete head, or with everything ready.
fn advance(buf: &mut BytesMut, ready: &mut usize, state: &mut State) {
    while *ready < buf.len() {
        match *state {
            State::PassThrough => *ready = buf.len(),
            State::Fixed { remaining } => {
                let avail = buf.len() - *ready;
                let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                *ready += n;
                // `n` never exceeds `remaining`, so this cannot underflow.
                let remaining = remaining - n as u64;
                *state = if remaining == 0 {
                    State::Head { scanned: 0 }
                } else {
                    State::Fixed { remaining }
                };
            }
            State::Chunked(Chunk::Data { remaining }) => {
                let avail = buf.len() - *ready;
                let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                *ready += n;
                let remaining = remaining - n as u64;
                *state = State::Chunked(if remaining == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { remaining }
                });
            }
            State::Chunked(chunk) => {
                let byte = buf[*ready];
                *ready += 1;
                *state = match chunk.step(byte) {
                    ChunkStep::Next(next) => State::Chunked(next),
                    ChunkStep::Done => State::Head { scanned: 0 },
                    ChunkStep::Invalid => State::PassThrough,
                };
            }
            State::Head { scanned } => {
                // Empty lines before a request line are skipped by httparse
                // (RFC 9112 §2.2); handing them out at once keeps a stream
                // of them from being re-parsed over and over.
                let rest = &buf[*ready..];
                if rest.starts_with(b"\r\n") {
                    *ready += 2;
                    continue;
                }
                if rest.starts_with(b"\n") {
                    *ready += 1;
                    continue;
                }
                let head = &mut buf[*ready..];
                match inspect_head(head, scanned) {
                    HeadStep::Partial => {
                        *state = State::Head {
                            scanned: head.len(),
                        };
                        return;
                    }
                    HeadStep::Complete { len, next } => {
                        *ready += len;
                        *state = next;
                    }
                    HeadStep::Ambiguous { len } => {
                        poison(&mut head[..len]);
                        *ready += len;
                        // hyper fails this head and closes the connection,
                        // so nothing after it will be read as a request.
                        *state = State::PassThrough;
                    }
                    HeadStep::GiveUp => *state = State::PassThrough,
                }
            }
        }
    }
}

/// Looks at the bytes of a pending head, of which `scanned` were already
/// searched for a blank line.
fn inspect_head(head: &[u8], scanned: usize) -> HeadStep {
    let has_blank_line = {
        let from = scanned.saturating_sub(2);
        let tail = &head[from..];
        tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
    };
    if head.len() > EAGER_PARSE_BYTES && !has_blank_line {
        return if head.len() > MAX_HEAD_BYTES {
            HeadStep::GiveUp
        } else {
            HeadStep::Partial
        };
    }

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) if head.len() > MAX_HEAD_BYTES => HeadStep::GiveUp,
        Ok(httparse::Status::Partial) => HeadStep::Partial,
        Ok(httparse::Status::Complete(len)) => {
            if is_ambiguous(req.headers) {
                return HeadStep::Ambiguous { len };
            }
            match body_framing(req.version.unwrap_or(1), req.headers) {
                Some(next) => HeadStep::Complete { len, next },
                None => HeadStep::GiveUp,
            }
        }
        Err(_) => HeadStep::GiveUp,
    }
}

/// The state that follows an unambiguous head, as RFC 9112 §6.3 and hyper's
/// server decide it. `None` where hyper refuses the head itself.
fn body_framing(version: u8, headers: &[httparse::Header<'_>]) -> Option<State> {
    let last_te = headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if let Some(te) = last_te {
        // hyper refuses Transfer-Encoding in HTTP/1.0, and any coding list
        // whose last coding (of the last header line) is not `chunked`.
        let last_coding = te.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
        return (version == 1 && last_coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            .then_some(State::Chunked(Chunk::Start));
    }

    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let value = decimal(h.value)?;
        if length.is_some_and(|l| l != value) {
            return None;
        }
        length = Some(value);
    }
    Some(match length {
        // hyper reserves the top two values of u64 as markers.
        Some(n) if n > u64::MAX - 2 => return None,
        Some(n) if n > 0 => State::Fixed { remaining: n },
        _ => State::Head { scanned: 0 },
    })
}

/// A `Content-Length` value the way hyper reads it: one or more ASCII
/// digits, nothing else, no overflow.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Makes a complete, parsed head unparseable without changing its length:
/// the request line's version becomes `HTTP/1.x` (see the module docs for
/// why that always fails in hyper with 400).
fn poison(head: &mut [u8]) {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let version_end = if line_end > 0 && head[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    if version_end >= 8 && head[version_end - 8..version_end - 1] == *b"HTTP/1." {
        head[version_end - 1] = POISONED_VERSION_DIGIT;
    } else if let Some(first) = head.first_mut() {
        // Unreachable for a head httparse accepted, but failing open is not
        // an option: a leading space is never a method token, and hyper
        // answers that with 400 as well.
        *first = b' ';
    }
}

// === impl Chunk ===

impl Chunk {
    /// Consumes one framing byte (not chunk data), byte for byte as hyper's
    /// chunked decoder does, including its leniencies (spaces after the
    /// size, any bytes in a trailer line).
    fn step(self, byte: u8) -> ChunkStep {
        use ChunkStep::{Done, Invalid, Next};
        match self {
            Chunk::Start => match hex_digit(byte) {
                Some(d) => Next(Chunk::Size { size: u64::from(d) }),
                None => Invalid,
            },
            Chunk::Size { size } => match (byte, hex_digit(byte)) {
                (_, Some(d)) => match size.checked_mul(16).and_then(|s| s.checked_add(d.into())) {
                    Some(size) => Next(Chunk::Size { size }),
                    None => Invalid,
                },
                (b'\t' | b' ', _) => Next(Chunk::SizeLws { size }),
                (b';', _) => Next(Chunk::Extension { size }),
                (b'\r', _) => Next(Chunk::SizeLf { size }),
                _ => Invalid,
            },
            Chunk::SizeLws { size } => match byte {
                b'\t' | b' ' => Next(Chunk::SizeLws { size }),
                b';' => Next(Chunk::Extension { size }),
                b'\r' => Next(Chunk::SizeLf { size }),
                _ => Invalid,
            },
            Chunk::Extension { size } => match byte {
                b'\r' => Next(Chunk::SizeLf { size }),
                b'\n' => Invalid,
                _ => Next(Chunk::Extension { size }),
            },
            Chunk::SizeLf { size } => match (byte, size) {
                (b'\n', 0) => Next(Chunk::EndCr),
                (b'\n', remaining) => Next(Chunk::Data { remaining }),
                _ => Invalid,
            },
            // Data is skipped in bulk by `advance`; a zero-length remainder
            // never stays in this state.
            Chunk::Data { .. } => Invalid,
            Chunk::DataCr => match byte {
                b'\r' => Next(Chunk::DataLf),
                _ => Invalid,
            },
            Chunk::DataLf => match byte {
                b'\n' => Next(Chunk::Start),
                _ => Invalid,
            },
            Chunk::Trailer => match byte {
                b'\r' => Next(Chunk::TrailerLf),
                _ => Next(Chunk::Trailer),
            },
            Chunk::TrailerLf => match byte {
                b'\n' => Next(Chunk::EndCr),
                _ => Invalid,
            },
            Chunk::EndCr => match byte {
                b'\r' => Next(Chunk::EndLf),
                _ => Next(Chunk::Trailer),
            },
            Chunk::EndLf => match byte {
                b'\n' => Done,
                _ => Invalid,
            },
        }
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
