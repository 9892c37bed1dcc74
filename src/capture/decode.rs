//! Undoes `Content-Encoding` on a captured body copy.
//!
//! The copy may be cut short (capture hit its cap, or the client left), and a
//! hostile upstream may send a decompression bomb, so every decoder here is
//! driven by hand: output is capped at `max_out`, and running out of input is
//! reported as truncation rather than as an error. The forwarded body is
//! never touched; this only shapes what an event stores.

use std::borrow::Cow;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use bytes::Bytes;
use flate2::{Crc, Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, Operation as _};

/// A decoded body, possibly incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub bytes: Bytes,
    /// The output is a prefix of the real content: the cap was hit, or the
    /// encoded input ended before its stream did.
    pub truncated: bool,
}

/// Why a body could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
    #[error("{encoding} body is corrupt")]
    Corrupt { encoding: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// How a decoder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The encoded stream ended properly.
    Finished,
    /// Input ran out first, or output reached the cap.
    Truncated,
}

/// Size of the scratch buffer each decoder writes into before the capped
/// copy into the output.
const CHUNK: usize = 32 * 1024;

/// HTTP zstd senders must keep the window at or below 8 MiB (RFC 9659);
/// refusing larger windows bounds decoder memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Decodes `body` as described by a `Content-Encoding` header value.
///
/// Names are case-insensitive; `x-gzip` means gzip and `identity`/`none` mean
/// no coding. A list such as `gzip, br` lists codings in the order they were
/// applied, so they are undone from the last. At most `max_out` bytes are
/// produced; hitting the cap, or input that ends before its compressed stream
/// does, gives what could be decoded with `truncated` set.
pub fn decode(
    content_encoding: Option<&str>,
    body: &[u8],
    max_out: usize,
) -> Result<Decoded, DecodeError> {
    let codings = parse_codings(content_encoding.unwrap_or_default())?;
    decode_with(&codings, body, max_out)
}

/// As [`decode`], for a body already held in shared bytes: without a
/// coding to undo (most calls), the decoded body is those bytes, not a
/// copy of them.
pub fn decode_shared(
    content_encoding: Option<&str>,
    body: &Bytes,
    max_out: usize,
) -> Result<Decoded, DecodeError> {
    let codings = parse_codings(content_encoding.unwrap_or_default())?;
    if codings.is_empty() {
        return Ok(Decoded {
            bytes: body.slice(..body.len().min(max_out)),
            truncated: body.len() > max_out,
        });
    }
    decode_with(&codings, body, max_out)
}

/// A decoded body that borrows the encoded one when nothing was undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRef<'b> {
    pub bytes: Cow<'b, [u8]>,
    /// As [`Decoded::truncated`].
    pub truncated: bool,
}

/// As [`decode`], borrowing `body` when there is no coding to undo (most
/// calls): the decoded body is then `body` itself, or its first
/// `max_out` bytes, neither copied nor shared.
pub fn decode_borrowed<'b>(
    content_encoding: Option<&str>,
    body: &'b [u8],
    max_out: usize,
) -> Result<DecodedRef<'b>, DecodeError> {
    let codings = parse_codings(content_encoding.unwrap_or_default())?;
    if codings.is_empty() {
        return Ok(DecodedRef {
            bytes: Cow::Borrowed(&body[..body.len().min(max_out)]),
            truncated: body.len() > max_out,
        });
    }
    let decoded = decode_with(&codings, body, max_out)?;
    Ok(DecodedRef {
        bytes: Cow::Owned(decoded.bytes.into()),
        truncated: decoded.truncated,
    })
}

fn decode_with(codings: &[Coding], body: &[u8], max_out: usize) -> Result<Decoded, DecodeError> {
    let mut data: Cow<'_, [u8]> = Cow::Borrowed(body);
    let mut truncated = false;
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let end = match coding {
            Coding::Gzip => gunzip(&data, max_out, &mut out)?,
            Coding::Deflate => inflate_any(&data, max_out, &mut out)?,
            Coding::Brotli => unbrotli(&data, max_out, &mut out)?,
            Coding::Zstd => unzstd(&data, max_out, &mut out)?,
        };
        truncated |= end == End::Truncated;
        data = Cow::Owned(out);
    }
    if data.len() > max_out {
        truncated = true;
        data = Cow::Owned(data[..max_out].to_vec());
    }
    Ok(Decoded {
        bytes: Bytes::from(data.into_owned()),
        truncated,
    })
}

fn parse_codings(header: &str) -> Result<Vec<Coding>, DecodeError> {
    header
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter_map(|c| match c.to_ascii_lowercase().as_str() {
            "identity" | "none" => None,
            "gzip" | "x-gzip" => Some(Ok(Coding::Gzip)),
            "deflate" => Some(Ok(Coding::Deflate)),
            "br" => Some(Ok(Coding::Brotli)),
            "zstd" => Some(Ok(Coding::Zstd)),
            _ => Some(Err(DecodeError::Unsupported(c.to_owned()))),
        })
        .collect()
}

/// Appends at most what fits under `max_out`; false when something did not.
fn push_capped(out: &mut Vec<u8>, chunk: &[u8], max_out: usize) -> bool {
    let room = max_out.saturating_sub(out.len());
    out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() <= room
}

/// Runs a zlib or raw deflate stream from the start of `input`. Returns how
/// it ended and how many input bytes it consumed.
fn inflate(
    input: &[u8],
    zlib: bool,
    max_out: usize,
    out: &mut Vec<u8>,
) -> Result<(End, usize), DecodeError> {
    let encoding = if zlib { "deflate" } else { "gzip" };
    let mut d = Decompress::new(zlib);
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress(&input[pos..], &mut buf, FlushDecompress::None)
            .map_err(|_| DecodeError::Corrupt { encoding })?;
        let read = usize::try_from(d.total_in() - in_before).unwrap_or(usize::MAX);
        let written = usize::try_from(d.total_out() - out_before).unwrap_or(usize::MAX);
        pos = pos.saturating_add(read).min(input.len());
        if !push_capped(out, &buf[..written], max_out) {
            return Ok((End::Truncated, pos));
        }
        match status {
            Status::StreamEnd => return Ok((End::Finished, pos)),
            Status::Ok | Status::BufError if read == 0 && written == 0 => {
                return Ok((End::Truncated, pos))
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// `deflate` is meant to be zlib-wrapped, but some servers send raw deflate;
/// a valid zlib header tells them apart.
fn inflate_any(input: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<End, DecodeError> {
    if input.is_empty() {
        return Ok(End::Finished);
    }
    let zlib = match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => true,
    };
    inflate(input, zlib, max_out, out).map(|(end, _)| end)
}

/// Decodes one or more gzip members (RFC 1952), checking each member's CRC
/// when it was decoded whole. Bytes after the last member that do not start
/// another member are ignored, as `gzip -d` does.
fn gunzip(input: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<End, DecodeError> {
    const CORRUPT: DecodeError = DecodeError::Corrupt { encoding: "gzip" };
    let mut pos = 0;
    let mut first = true;
    loop {
        let rest = &input[pos..];
        if rest.is_empty() {
            return Ok(End::Finished);
        }
        if !first && !starts_like_gzip(rest) {
            return Ok(End::Finished);
        }
        first = false;
        let Some(header_len) = gzip_header_len(rest)? else {
            return Ok(End::Truncated);
        };
        let member_start = out.len();
        let (end, used) = inflate(&rest[header_len..], false, max_out, out)?;
        if end == End::Truncated {
            return Ok(End::Truncated);
        }
        let trailer_at = header_len + used;
        let Some(trailer) = rest.get(trailer_at..trailer_at + 8) else {
            return Ok(End::Truncated);
        };
        let mut crc = Crc::new();
        crc.update(&out[member_start..]);
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if crc.sum() != want_crc || crc.amount() != want_len {
            return Err(CORRUPT);
        }
        pos += trailer_at + 8;
    }
}

/// Length of the gzip member header at the start of `input`; `None` when the
/// input ends inside it.
fn gzip_header_len(input: &[u8]) -> Result<Option<usize>, DecodeError> {
    const CORRUPT: DecodeError = DecodeError::Corrupt { encoding: "gzip" };
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;

    if !starts_like_gzip(input) {
        return Err(CORRUPT);
    }
    let Some(&flags) = input.get(3) else {
        return Ok(None);
    };
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = input.get(pos..pos + 2) else {
            return Ok(None);
        };
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(nul) = input
                .get(pos..)
                .and_then(|r| r.iter().position(|&b| b == 0))
            else {
                return Ok(None);
            };
            pos += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    Ok((pos <= input.len()).then_some(pos))
}

/// Whether `input` begins with (a prefix of) the gzip magic and method.
fn starts_like_gzip(input: &[u8]) -> bool {
    const MAGIC: [u8; 3] = [0x1f, 0x8b, 8];
    let n = input.len().min(MAGIC.len());
    input[..n] == MAGIC[..n]
}

fn unbrotli(input: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<End, DecodeError> {
    if input.is_empty() {
        return Ok(End::Finished);
    }
    let mut state = BrotliState::new(
        StandardAlloc::default(),
        StandardAlloc::default(),
        StandardAlloc::default(),
    );
    let mut buf = vec![0u8; CHUNK];
    let (mut avail_in, mut in_off, mut total) = (input.len(), 0, 0);
    loop {
        let (mut avail_out, mut out_off) = (buf.len(), 0);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            &mut buf,
            &mut total,
            &mut state,
        );
        if !push_capped(out, &buf[..out_off], max_out) {
            return Ok(End::Truncated);
        }
        match result {
            BrotliResult::ResultSuccess => return Ok(End::Finished),
            BrotliResult::NeedsMoreInput => return Ok(End::Truncated),
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultFailure => return Err(DecodeError::Corrupt { encoding: "br" }),
        }
    }
}

fn unzstd(input: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<End, DecodeError> {
    const CORRUPT: DecodeError = DecodeError::Corrupt { encoding: "zstd" };
    if input.is_empty() {
        return Ok(End::Finished);
    }
    let mut d = ZstdDecoder::new().map_err(|_| CORRUPT)?;
    d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
        .map_err(|_| CORRUPT)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    loop {
        let status = d
            .run_on_buffers(&input[pos..], &mut buf)
            .map_err(|_| CORRUPT)?;
        pos += status.bytes_read;
        if !push_capped(out, &buf[..status.bytes_written], max_out) {
            return Ok(End::Truncated);
        }
        // `remaining == 0` means the current frame is fully decoded and
        // flushed; more input would start another frame.
        if status.remaining == 0 && pos >= input.len() {
            return Ok(End::Finished);
        }
        if status.bytes_read == 0 && status.bytes_written == 0 {
            return Ok(End::Truncated);
        }
    }
}

#[cfg(test)]
mod tests;
