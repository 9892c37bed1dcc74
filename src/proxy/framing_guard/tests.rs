use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const PLAIN: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\n\
Content-Length: 11\r\n\r\n{\"a\":\"xyz\"}";
const CHUNKED: &[u8] = b"POST /v1/embeddings HTTP/1.1\r\nHost: api\r\n\
Transfer-Encoding: gzip, chunked\r\n\r\n\
5;name=value;q=\"x\"\r\nhello\r\nA \t;ext\r\n0123456789\r\n0\r\n\
X-Checksum: abc\r\nX-Other: d\r\n\r\n";
const AMBIGUOUS: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\n\
Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// Delivers a fixed byte stream in the given pieces, then EOF.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(out.remaining());
            out.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The splits every stream is tried with: whole, byte by byte, and random
/// piece sizes from a few fixed seeds.
fn splits(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut all = vec![
        vec![input.to_vec()],
        input.iter().map(|&b| vec![b]).collect(),
    ];
    for seed in [1u64, 7, 42, 0xdead_beef] {
        let mut x = seed;
        let mut pieces = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            // xorshift64: deterministic, no dependency needed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = usize::try_from(x % 40).unwrap() + 1;
            let (head, tail) = rest.split_at(n.min(rest.len()));
            pieces.push(head.to_vec());
            rest = tail;
        }
        all.push(pieces);
    }
    all
}

async fn through_guard(pieces: Vec<Vec<u8>>) -> Vec<u8> {
    let mut guard = FramingGuard::new(Pieces(pieces.into()));
    let mut out = Vec::new();
    guard.read_to_end(&mut out).await.unwrap();
    out
}

/// Runs `input` through the guard under every split and checks that all
/// splits agree, returning the common output.
async fn guarded(input: &[u8]) -> Vec<u8> {
    let mut outputs = Vec::new();
    for pieces in splits(input) {
        outputs.push(through_guard(pieces).await);
    }
    let first = outputs[0].clone();
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(out, &first, "split #{i} differs");
    }
    first
}

fn parses(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    httparse::Request::new(&mut headers).parse(head).is_ok()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn ambiguity_needs_both_headers() {
    let h = |name: &'static str| httparse::Header { name, value: b"1" };
    assert!(!is_ambiguous(&[]));
    assert!(!is_ambiguous(&[h("Content-Length"), h("content-length")]));
    assert!(!is_ambiguous(&[h("Transfer-Encoding"), h("Host")]));
    assert!(is_ambiguous(&[h("Content-Length"), h("Transfer-Encoding")]));
    assert!(is_ambiguous(&[
        h("TRANSFER-ENCODING"),
        h("Host"),
        h("content-LENGTH")
    ]));
    assert!(is_ambiguous(&[
        h("Content-Length"),
        h("Content-Length"),
        h("transfer-encoding"),
        h("Transfer-Encoding"),
    ]));
    assert!(!is_ambiguous(&[
        h("Content-Lengthx"),
        h("Transfer-Encoding")
    ]));
}

#[tokio::test]
async fn plain_request_passes_unchanged() {
    assert_eq!(guarded(PLAIN).await, PLAIN);
    let get = b"GET /v1/models HTTP/1.0\r\nHost: api\r\n\r\n";
    assert_eq!(guarded(get).await, get);
}

#[tokio::test]
async fn pipelined_requests_pass_unchanged() {
    let input = concat(&[CHUNKED, PLAIN, b"\r\n", PLAIN, CHUNKED]);
    assert_eq!(guarded(&input).await, input);
}

#[tokio::test]
async fn ambiguous_request_is_made_unparseable() {
    let out = guarded(AMBIGUOUS).await;
    assert_eq!(out.len(), AMBIGUOUS.len());
    assert!(parses(AMBIGUOUS));
    assert!(!parses(&out));
    assert!(out.starts_with(b"POST /v1/chat/completions HTTP/1.x\r\n"));
    // Only the one byte changes.
    let changed = out.iter().zip(AMBIGUOUS).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn any_order_case_and_count_is_ambiguous() {
    let heads: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTrAnSfEr-EnCoDiNg: identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\
Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.0\nContent-Length: 3\nTransfer-Encoding: chunked\n\n",
        b"\r\n\r\nPUT / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding:\r\n\r\n",
    ];
    for head in heads {
        let input = concat(&[head, b"0\r\n\r\n"]);
        let out = guarded(&input).await;
        assert!(parses(head));
        assert!(!parses(&out), "{}", String::from_utf8_lossy(&out));
        assert_eq!(out.len(), input.len());
    }
}

#[tokio::test]
async fn chunked_body_is_followed_to_the_next_head() {
    // Chunk data that looks like an ambiguous head must stay data, and the
    // head after the trailers must still be checked.
    let decoy = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut first = format!(
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
        decoy.len()
    )
    .into_bytes();
    first.extend_from_slice(decoy);
    first.extend_from_slice(b"\r\n0;last\r\nTrailer-A: 1\r\n\r\n");

    let clean = concat(&[&first, PLAIN]);
    assert_eq!(guarded(&clean).await, clean);

    let input = concat(&[&first, AMBIGUOUS]);
    let out = guarded(&input).await;
    assert_eq!(out[..first.len()], first[..]);
    assert!(!parses(&out[first.len()..]));
}

#[tokio::test]
async fn content_length_body_is_skipped_to_the_next_head() {
    let body_like_head =
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let first = format!(
        "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body_like_head.len()
    );
    let first = concat(&[first.as_bytes(), body_like_head]);
    let input = concat(&[&first, AMBIGUOUS]);
    let out = guarded(&input).await;
    assert_eq!(out[..first.len()], first[..]);
    assert!(!parses(&out[first.len()..]));
}

#[tokio::test]
async fn unfollowable_input_passes_through_untouched() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    assert_eq!(guarded(preface).await, preface);

    // A malformed chunk size: hyper fails the body, the guard stops there.
    let bad_chunk = concat(&[
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        AMBIGUOUS,
    ]);
    assert_eq!(guarded(&bad_chunk).await, bad_chunk);

    // Truncated head at EOF is released as is.
    let truncated = b"POST / HTTP/1.1\r\nContent-Len";
    assert_eq!(guarded(truncated).await, truncated);
}

#[tokio::test]
async fn head_over_the_cap_is_released() {
    let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    input.resize(MAX_HEAD_BYTES + 10, b'a');
    let out = through_guard(vec![input.clone()]).await;
    assert_eq!(out, input);
}

/// Serves one connection with hyper through the guard, writes `request`
/// from the client side and returns what came back plus the call count.
async fn serve(request: &[u8], guard: bool) -> (String, usize) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // Read the body to its end so hyper can keep the connection for
            // the next pipelined request.
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                frame.unwrap();
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let builder = hyper::server::conn::http1::Builder::new();
    let conn = async {
        if guard {
            let _ = builder
                .serve_connection(TokioIo::new(FramingGuard::new(server)), service)
                .await;
        } else {
            let _ = builder
                .serve_connection(TokioIo::new(server), service)
                .await;
        }
    };
    let talk = async {
        client.write_all(request).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        out
    };
    let (_, out) = tokio::join!(conn, talk);
    (
        String::from_utf8_lossy(&out).into_owned(),
        calls.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn hyper_answers_ambiguous_request_with_400() {
    let (out, calls) = serve(AMBIGUOUS, true).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(calls, 0);

    let normal = b"GET /v1/models HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n";
    let (out, calls) = serve(normal, true).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(calls, 1);

    // A good request then an ambiguous one on the same connection.
    let pipelined = concat(&[CHUNKED, AMBIGUOUS]);
    let (out, calls) = serve(&pipelined, true).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/1.1 400"), "{out}");
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn hyper_alone_would_call_the_service() {
    // The reason the guard exists: without it hyper accepts the request.
    let (out, calls) = serve(AMBIGUOUS, false).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn upgrade_does_not_switch_the_guard_off() {
    let first = b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let input = concat(&[first, AMBIGUOUS]);
    let out = guarded(&input).await;
    assert!(!parses(&out[first.len()..]));
    let (out, calls) = serve(&input, true).await;
    assert!(out.contains("HTTP/1.1 400"), "{out}");
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn long_ambiguous_head_is_caught() {
    let mut head = b"POST / HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(3 * EAGER_PARSE_BYTES, b'p');
    head.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n");
    let out = guarded(&head).await;
    assert!(!parses(&out));
}

/// Sniffs `input` under every split; returns the verdict and what the
/// server reads afterwards, which must be `input` whole.
async fn sniffed(input: &[u8]) -> bool {
    let mut verdicts = Vec::new();
    for pieces in splits(input) {
        let mut guard = FramingGuard::new(Pieces(pieces.into()));
        verdicts.push(guard.starts_with_h2_preface().await.unwrap());
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, guarded(input).await, "bytes changed by sniffing");
    }
    assert!(
        verdicts.iter().all(|v| *v == verdicts[0]),
        "splits disagree"
    );
    verdicts[0]
}

#[tokio::test]
async fn http2_preface_is_recognised_and_kept_for_the_server() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    assert!(sniffed(preface).await);
    assert!(sniffed(&preface[..24]).await);
}

#[tokio::test]
async fn http1_requests_and_short_streams_are_not_http2() {
    assert!(!sniffed(PLAIN).await);
    assert!(!sniffed(CHUNKED).await);
    // Poisoning happens before the server reads, sniffed or not.
    assert!(!sniffed(AMBIGUOUS).await);
    assert!(!parses(&guarded(AMBIGUOUS).await));
    // A method that happens to start like the preface.
    assert!(!sniffed(b"PRIX / HTTP/1.1\r\nHost: a\r\n\r\n").await);
    // The preface cut short by the end of the stream, and nothing at all.
    assert!(!sniffed(b"PRI * HTTP/2.0\r\n").await);
    assert!(!sniffed(b"").await);
}
