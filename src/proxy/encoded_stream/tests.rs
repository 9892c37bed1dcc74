use super::*;

use std::task::Waker;

use http_body_util::StreamBody;
use serde_json::{json, Value};

use crate::policy::PolicyDef;

fn policies() -> Arc<PolicySet> {
    Arc::new(
        PolicySet::compile(&[PolicyDef {
            name: Some("payment-card-block".into()),
            detectors: vec!["credit_card".into()],
            action: Some("block".into()),
            direction: Some("response".into()),
            ..Default::default()
        }])
        .unwrap(),
    )
}

fn sse(pieces: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for p in pieces {
        let chunk = json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": p}}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn compress(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::stream::encode_all(bytes, 3).unwrap(),
        other => panic!("{other}"),
    }
}

/// Runs `frames` through the guard; the bytes out, whether it ended with
/// an error, and whether it was blocked.
fn run(encoding: &str, frames: Vec<Bytes>) -> (Vec<u8>, bool, bool) {
    let stream =
        futures_util::stream::iter(frames.into_iter().map(|b| Ok::<_, String>(Frame::data(b))));
    let blocked = Arc::new(Mutex::new(false));
    let flag = blocked.clone();
    let mut guard = Box::pin(EncodedStreamGuard::new(
        StreamBody::new(stream),
        encoding,
        policies(),
        Box::new(move |_| *flag.lock().unwrap() = true),
    ));
    let mut cx = Context::from_waker(Waker::noop());
    let (mut out, mut failed) = (Vec::new(), false);
    loop {
        match guard.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => out.extend_from_slice(frame.data_ref().unwrap()),
            Poll::Ready(Some(Err(_))) => {
                failed = true;
                break;
            }
            Poll::Ready(None) => break,
            Poll::Pending => panic!("all frames are ready"),
        }
    }
    let blocked = *blocked.lock().unwrap();
    (out, failed, blocked)
}

/// The compressed stream cut into frames of `size` bytes.
fn frames(bytes: &[u8], size: usize) -> Vec<Bytes> {
    bytes.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn decoded_text(encoding: &str, bytes: &[u8]) -> String {
    let out: Arc<Mutex<Vec<u8>>> = Arc::default();
    let mut decoder = decoder_for(encoding, out.clone()).unwrap();
    // A cut stream is incomplete: decode what there is.
    let _ = decoder.write_all(bytes);
    let _ = decoder.flush();
    drop(decoder);
    let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_clean_compressed_stream_passes_as_sent() {
    let plain = sse(&["Hello", " world", ", version 2", ".14", " is out."]);
    for encoding in ["gzip", "deflate", "zstd"] {
        let compressed = compress(encoding, &plain);
        for size in [1, 7, 64, 100_000] {
            let (out, failed, blocked) = run(encoding, frames(&compressed, size));
            assert!(!failed && !blocked, "{encoding} {size}");
            assert_eq!(out, compressed, "{encoding} {size}");
        }
    }
}

#[test]
fn a_card_split_in_a_compressed_stream_never_reaches_the_app() {
    let plain = sse(&[
        "Your card: ",
        "5555 55",
        "55 55",
        "55 4444",
        ". ",
        "more text",
    ]);
    for encoding in ["gzip", "deflate", "zstd"] {
        let compressed = compress(encoding, &plain);
        for size in [1, 5, 33, 100_000] {
            let (out, failed, blocked) = run(encoding, frames(&compressed, size));
            assert!(failed && blocked, "{encoding} {size}");
            let text = decoded_text(encoding, &out);
            assert!(!text.contains("4444"), "{encoding} {size}: {text}");
        }
    }
}

#[test]
fn a_corrupt_compressed_stream_ends_with_an_error() {
    let (out, failed, blocked) = run("gzip", vec![Bytes::from_static(b"not gzip at all")]);
    assert!(failed && !blocked);
    assert!(out.is_empty());
}

#[test]
fn only_single_known_codings_stream() {
    for encoding in ["gzip", "x-gzip", "deflate", "br", "zstd", " GZIP "] {
        assert!(streams_decodable(encoding), "{encoding}");
    }
    for encoding in ["compress", "gzip, br", "identity", ""] {
        assert!(!streams_decodable(encoding), "{encoding}");
    }
}
