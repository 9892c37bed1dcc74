use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

use super::*;

const MAX: usize = 1 << 20;

fn text(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"The quick brown fox jumps over the lazy dog. "[i % 45])
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// A valid brotli stream built from uncompressed meta-blocks (RFC 7932
/// section 9.2); no brotli encoder is available as a dependency.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, bits: u32) {
            self.acc |= value << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn align(&mut self) {
            if self.n > 0 {
                self.put(0, 8 - self.n);
            }
        }
    }
    let mut w = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    w.put(0, 1); // WBITS = 16
    for chunk in data.chunks(60_000) {
        w.put(0, 1); // ISLAST
        w.put(0, 2); // MNIBBLES = 4
        w.put(chunk.len() as u64 - 1, 16);
        w.put(1, 1); // ISUNCOMPRESSED
        w.align();
        w.out.extend_from_slice(chunk);
    }
    w.put(1, 1); // ISLAST
    w.put(1, 1); // ISLASTEMPTY
    w.align();
    w.out
}

#[test]
fn identity_and_absent_encoding_pass_through() {
    for enc in [
        None,
        Some(""),
        Some("identity"),
        Some("None"),
        Some(" identity "),
    ] {
        let d = decode(enc, b"{\"a\":1}", MAX).unwrap();
        assert_eq!(&d.bytes[..], b"{\"a\":1}");
        assert!(!d.truncated);
    }
}

#[test]
fn shared_bytes_without_a_coding_are_the_decoded_body_itself() {
    let body = Bytes::from_static(b"{\"a\":1}");
    for enc in [None, Some(""), Some(" identity ")] {
        let d = decode_shared(enc, &body, MAX).unwrap();
        assert_eq!(d.bytes.as_ptr(), body.as_ptr(), "{enc:?}: not copied");
        assert_eq!(d, decode(enc, &body, MAX).unwrap());
    }
    let d = decode_shared(None, &Bytes::from_static(b"0123456789"), 4).unwrap();
    assert_eq!((&d.bytes[..], d.truncated), (&b"0123"[..], true));
    assert_eq!(d, decode(None, b"0123456789", 4).unwrap());
    // With a coding, or an unknown one, it is `decode` exactly.
    let gz = Bytes::from(gzip(b"{\"a\":1}"));
    assert_eq!(
        decode_shared(Some("gzip"), &gz, MAX).unwrap(),
        decode(Some("gzip"), &gz, MAX).unwrap()
    );
    assert_eq!(
        decode_shared(Some("snappy"), &gz, MAX),
        decode(Some("snappy"), &gz, MAX)
    );
}

#[test]
fn borrowed_bodies_without_a_coding_are_the_decoded_body_itself() {
    let body = b"{\"a\":1}";
    for enc in [None, Some(""), Some(" identity ")] {
        let d = decode_borrowed(enc, body, MAX).unwrap();
        assert!(matches!(d.bytes, Cow::Borrowed(b) if b.as_ptr() == body.as_ptr()));
        let whole = decode(enc, body, MAX).unwrap();
        assert_eq!(
            (&d.bytes[..], d.truncated),
            (&whole.bytes[..], whole.truncated)
        );
    }
    let d = decode_borrowed(None, b"0123456789", 4).unwrap();
    assert_eq!((&d.bytes[..], d.truncated), (&b"0123"[..], true));
    let gz = gzip(&text(5000));
    for max in [MAX, 100] {
        let d = decode_borrowed(Some("gzip"), &gz, max).unwrap();
        let whole = decode(Some("gzip"), &gz, max).unwrap();
        assert_eq!(
            (&d.bytes[..], d.truncated),
            (&whole.bytes[..], whole.truncated)
        );
    }
    assert_eq!(
        decode_borrowed(Some("snappy"), &gz, MAX),
        decode(Some("snappy"), &gz, MAX).map(|_| unreachable!())
    );
}

#[test]
fn identity_is_capped_too() {
    let d = decode(None, b"0123456789", 4).unwrap();
    assert_eq!(&d.bytes[..], b"0123");
    assert!(d.truncated);
}

#[test]
fn each_coding_round_trips() {
    let data = text(200_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&data)),
        ("x-gzip", gzip(&data)),
        ("GZIP", gzip(&data)),
        ("deflate", zlib(&data)),
        ("deflate", raw_deflate(&data)),
        ("br", brotli_stored(&data)),
        ("Br", brotli_stored(&data)),
        ("zstd", zstd(&data)),
    ];
    for (enc, body) in cases {
        let d = decode(Some(enc), &body, MAX).unwrap();
        assert!(!d.truncated, "{enc}");
        assert_eq!(d.bytes.len(), data.len(), "{enc}");
        assert_eq!(&d.bytes[..], &data[..], "{enc}");
    }
}

#[test]
fn brotli_from_a_real_encoder() {
    // `hello\n` as produced by the reference brotli encoder.
    let body = b"\x8f\x02\x80\x68\x65\x6c\x6c\x6f\x0a\x03";
    let d = decode(Some("br"), body, MAX).unwrap();
    assert_eq!(&d.bytes[..], b"hello\n");
    assert!(!d.truncated);
}

#[test]
fn a_list_is_undone_from_the_last_coding() {
    let data = text(10_000);
    let body = zstd(&gzip(&data));
    let d = decode(Some("gzip, zstd"), &body, MAX).unwrap();
    assert_eq!(&d.bytes[..], &data[..]);
    let body = brotli_stored(&zlib(&data));
    let d = decode(Some("deflate,identity,br"), &body, MAX).unwrap();
    assert_eq!(&d.bytes[..], &data[..]);
    assert!(!d.truncated);
}

#[test]
fn unknown_codings_are_unsupported() {
    assert_eq!(
        decode(Some("compress"), b"x", MAX),
        Err(DecodeError::Unsupported("compress".into()))
    );
    assert_eq!(
        decode(Some("gzip, snappy"), b"x", MAX),
        Err(DecodeError::Unsupported("snappy".into()))
    );
}

#[test]
fn output_is_capped_against_bombs() {
    let zeros = vec![0u8; 8 << 20];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&zeros)),
        ("deflate", zlib(&zeros)),
        ("deflate", raw_deflate(&zeros)),
        ("zstd", zstd(&zeros)),
        ("br", brotli_stored(&zeros)),
    ];
    for (enc, body) in cases {
        let d = decode(Some(enc), &body, 64 * 1024).unwrap();
        assert!(d.truncated, "{enc}");
        assert_eq!(d.bytes.len(), 64 * 1024, "{enc}");
        assert!(d.bytes.iter().all(|&b| b == 0), "{enc}");
    }
}

#[test]
fn output_exactly_at_the_cap_is_not_truncated() {
    let data = text(5000);
    for (enc, body) in [
        ("gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("zstd", zstd(&data)),
    ] {
        let d = decode(Some(enc), &body, 5000).unwrap();
        assert!(!d.truncated, "{enc}");
        assert_eq!(d.bytes.len(), 5000);
    }
}

#[test]
fn input_cut_short_gives_a_truncated_prefix() {
    // Random-looking data so the compressed form is long enough to cut.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(&data)),
        ("deflate", zlib(&data)),
        ("deflate", raw_deflate(&data)),
        ("zstd", zstd(&data)),
        ("br", brotli_stored(&data)),
    ];
    for (enc, body) in cases {
        for cut in [body.len() / 2, body.len() - 1] {
            let d = decode(Some(enc), &body[..cut], MAX).unwrap();
            assert!(d.truncated, "{enc} cut at {cut}");
            // Cut in the trailer, everything may have been decoded already.
            assert!(d.bytes.len() <= data.len(), "{enc} cut at {cut}");
            if cut == body.len() / 2 {
                assert!(d.bytes.len() < data.len(), "{enc} cut at {cut}");
            }
            assert_eq!(&d.bytes[..], &data[..d.bytes.len()], "{enc} cut at {cut}");
        }
    }
}

#[test]
fn input_cut_inside_the_gzip_header_is_truncated_not_corrupt() {
    let body = gzip(b"hello");
    for cut in [1, 2, 5, 9] {
        let d = decode(Some("gzip"), &body[..cut], MAX).unwrap();
        assert!(d.truncated, "cut at {cut}");
        assert!(d.bytes.is_empty());
    }
}

#[test]
fn empty_bodies_decode_to_nothing() {
    for enc in ["gzip", "deflate", "br", "zstd"] {
        let d = decode(Some(enc), b"", MAX).unwrap();
        assert!(d.bytes.is_empty(), "{enc}");
        assert!(!d.truncated, "{enc}");
    }
}

#[test]
fn concatenated_gzip_members_are_all_decoded() {
    let mut body = gzip(b"first ");
    body.extend(gzip(b"second"));
    let d = decode(Some("gzip"), &body, MAX).unwrap();
    assert_eq!(&d.bytes[..], b"first second");
    assert!(!d.truncated);
}

#[test]
fn gzip_header_fields_are_skipped() {
    let mut e = flate2::GzBuilder::new()
        .filename("body.json")
        .comment("c")
        .extra(vec![1, 2, 3])
        .write(Vec::new(), Compression::fast());
    e.write_all(b"{\"ok\":true}").unwrap();
    let body = e.finish().unwrap();
    let d = decode(Some("gzip"), &body, MAX).unwrap();
    assert_eq!(&d.bytes[..], b"{\"ok\":true}");
}

#[test]
fn garbage_is_corrupt() {
    let garbage = b"this is not compressed at all, just plain text".as_slice();
    assert!(matches!(
        decode(Some("gzip"), garbage, MAX),
        Err(DecodeError::Corrupt { encoding: "gzip" })
    ));
    assert!(matches!(
        decode(Some("zstd"), garbage, MAX),
        Err(DecodeError::Corrupt { encoding: "zstd" })
    ));
    let mut bad_crc = gzip(b"hello world");
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    assert!(matches!(
        decode(Some("gzip"), &bad_crc, MAX),
        Err(DecodeError::Corrupt { .. })
    ));
}
