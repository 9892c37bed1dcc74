//! Guarding a compressed event stream: upstream may compress an SSE answer
//! (gzip, deflate, br, zstd) although the proxy asked for none.
//!
//! [`EncodedStreamGuard`] decodes each compressed frame as it arrives and
//! passes the decoded text through a [`StreamGuard`], which holds back and
//! inspects it exactly as for a plain stream. The app gets upstream's
//! compressed frames unchanged, each one only once all the text it decodes
//! to has been released by the guard, so a held tail holds the compressed
//! frames that carry it.
//!
//! A compressed stream cannot take a plain error event at its end, so when
//! the guard cuts the stream the body ends with an error instead: the app's
//! HTTP client sees the response break off (HTTP/1.1 without its final
//! chunk, an HTTP/2 reset) and never the blocked entity. The verdict is
//! reported as for a plain stream, and the RESPONSE records the block. A
//! body that cannot be decoded also ends with an error: nothing
//! undecodable is forwarded unchecked.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::BoxError;
use super::policy_guard::{OnBlock, StreamGuard};
use crate::policy::PolicySet;

/// Compressed input fed to the decoder at once, so that one frame of a
/// decompression bomb cannot expand without bound before it is inspected.
const INPUT_SLICE: usize = 1024;

/// The message of the error that ends a cut compressed stream.
pub const CUT_MESSAGE: &str = "compressed answer ended by a response block policy";

pin_project! {
    /// A compressed SSE response body, inspected through its decoded text.
    pub struct EncodedStreamGuard<B> {
        #[pin]
        inner: Option<B>,
        decoder: Option<Box<dyn Write + Send>>,
        decoded: Arc<Mutex<Vec<u8>>>,
        feed: Arc<Mutex<Fed>>,
        guard: Pin<Box<StreamGuard<DecodedFeed>>>,
        // Compressed frames not yet forwarded, with the decoded offset
        // their text ends at.
        pending: VecDeque<(Bytes, u64)>,
        // Decoded bytes fed to the guard so far.
        fed: u64,
        // Decoded bytes the guard has released so far.
        released: u64,
        blocked: Arc<Mutex<bool>>,
        done: bool,
    }
}

/// The decoded text waiting for the guard.
#[derive(Default)]
struct Fed {
    frames: VecDeque<Bytes>,
    ended: bool,
}

/// The guard's view of the decoded text: ready frames, then pending until
/// more is decoded (the outer body drives it, so no waker is kept).
pub struct DecodedFeed(Arc<Mutex<Fed>>);

/// A `Write` that appends to a shared buffer, for the decoders.
struct Sink(Arc<Mutex<Vec<u8>>>);

/// A decoder for one `Content-Encoding` value; `None` for none, a list of
/// codings, or one that is not known.
fn decoder_for(encoding: &str, out: Arc<Mutex<Vec<u8>>>) -> Option<Box<dyn Write + Send>> {
    let sink = Sink(out);
    let decoder: Box<dyn Write + Send> = match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::write::MultiGzDecoder::new(sink)),
        "deflate" => Box::new(flate2::write::ZlibDecoder::new(sink)),
        "br" => Box::new(brotli_decompressor::DecompressorWriter::new(sink, 4096)),
        "zstd" => Box::new(zstd::stream::write::Decoder::new(sink).ok()?),
        _ => return None,
    };
    Some(decoder)
}

/// Whether [`EncodedStreamGuard`] can decode `encoding` as it streams.
pub fn streams_decodable(encoding: &str) -> bool {
    decoder_for(encoding, Arc::default()).is_some()
}

// === impl EncodedStreamGuard ===

impl<B> EncodedStreamGuard<B> {
    /// Guards `inner`, compressed with `encoding` (which
    /// [`streams_decodable`] accepts), with the response block policies of
    /// `policies`; `on_block` is called once when the stream is cut.
    pub fn new(inner: B, encoding: &str, policies: Arc<PolicySet>, on_block: OnBlock) -> Self {
        let decoded: Arc<Mutex<Vec<u8>>> = Arc::default();
        let feed: Arc<Mutex<Fed>> = Arc::default();
        let blocked = Arc::new(Mutex::new(false));
        let flag = blocked.clone();
        let guard = StreamGuard::new(
            DecodedFeed(feed.clone()),
            policies,
            Box::new(move |verdict| {
                *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
                on_block(verdict);
            }),
        );
        Self {
            inner: Some(inner),
            decoder: decoder_for(encoding, decoded.clone()),
            decoded,
            feed,
            guard: Box::pin(guard),
            pending: VecDeque::new(),
            fed: 0,
            released: 0,
            blocked,
            done: false,
        }
    }
}

impl<B> Body for EncodedStreamGuard<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            // What the guard has released of the decoded text.
            while let Poll::Ready(Some(out)) = this.guard.as_mut().poll_frame(cx) {
                match out {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            *this.released += data.len() as u64;
                        }
                    }
                    Err(_) => break,
                }
                if *this.blocked.lock().unwrap_or_else(PoisonError::into_inner) {
                    break;
                }
            }
            if *this.blocked.lock().unwrap_or_else(PoisonError::into_inner) {
                *this.done = true;
                this.inner.set(None);
                return Poll::Ready(Some(Err(CUT_MESSAGE.into())));
            }
            if let Some((_, end)) = this.pending.front() {
                if *end <= *this.released {
                    if let Some((bytes, _)) = this.pending.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                }
            }
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                // Upstream ended and the guard judged the end: whatever it
                // released is out; the rest stays held.
                *this.done = true;
                return Poll::Ready(None);
            };
            match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers of a compressed stream are not passed on:
                    // the body ends when its text has been judged.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let decoded = decode_into(this.decoder, this.decoded, &data);
                    let Some(decoded) = decoded else {
                        *this.done = true;
                        this.inner.set(None);
                        return Poll::Ready(Some(Err(
                            "compressed answer could not be decoded for inspection".into(),
                        )));
                    };
                    *this.fed += decoded.len() as u64;
                    let mut fed = this.feed.lock().unwrap_or_else(PoisonError::into_inner);
                    if !decoded.is_empty() {
                        fed.frames.push_back(decoded);
                    }
                    this.pending.push_back((data, *this.fed));
                }
                Some(Err(error)) => {
                    *this.done = true;
                    this.inner.set(None);
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    this.inner.set(None);
                    if let Some(mut decoder) = this.decoder.take() {
                        let _ = decoder.flush();
                        drop(decoder);
                    }
                    let rest = std::mem::take(
                        &mut *this.decoded.lock().unwrap_or_else(PoisonError::into_inner),
                    );
                    let mut fed = this.feed.lock().unwrap_or_else(PoisonError::into_inner);
                    if !rest.is_empty() {
                        *this.fed += rest.len() as u64;
                        fed.frames.push_back(Bytes::from(rest));
                    }
                    fed.ended = true;
                    // The last compressed frames end where the text ends.
                    for (_, end) in this.pending.iter_mut() {
                        *end = (*end).min(*this.fed);
                    }
                    drop(fed);
                    // Drain the guard to its end, then release what it let go.
                    while let Poll::Ready(Some(Ok(frame))) = this.guard.as_mut().poll_frame(cx) {
                        if let Some(data) = frame.data_ref() {
                            *this.released += data.len() as u64;
                        }
                    }
                    if *this.blocked.lock().unwrap_or_else(PoisonError::into_inner) {
                        *this.done = true;
                        return Poll::Ready(Some(Err(CUT_MESSAGE.into())));
                    }
                    // A clean end releases everything.
                    *this.released = u64::MAX;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

/// Decodes `data` through `decoder` in small slices; the decoded bytes, or
/// `None` if the data is corrupt (or no decoder exists).
fn decode_into(
    decoder: &mut Option<Box<dyn Write + Send>>,
    out: &Arc<Mutex<Vec<u8>>>,
    data: &[u8],
) -> Option<Bytes> {
    let decoder = decoder.as_mut()?;
    for slice in data.chunks(INPUT_SLICE) {
        decoder.write_all(slice).ok()?;
    }
    decoder.flush().ok()?;
    let bytes = std::mem::take(&mut *out.lock().unwrap_or_else(PoisonError::into_inner));
    Some(Bytes::from(bytes))
}

// === impl DecodedFeed ===

impl Body for DecodedFeed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut fed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match fed.frames.pop_front() {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            None if fed.ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

// === impl Sink ===

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
