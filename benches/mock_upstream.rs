//! A fast mock of an OpenAI-compatible upstream for the overhead benchmark
//! (`bench/run.sh`). Not part of the product.
//!
//! Every request body is read and discarded, whatever its size. A body
//! containing `"stream": true` gets 20 SSE chunks, a usage chunk and
//! `[DONE]`; anything else gets one fixed chat completion (~500 bytes). The
//! pause between SSE chunks is `--chunk-delay-ms` (default 0), or the
//! request's `x-mock-chunk-delay-ms` header when present, so one mock serves
//! both the fast streaming runs and the long-lived streams of the RSS run.
//!
//! Usage: `mock_upstream [--listen 127.0.0.1:0] [--chunk-delay-ms N]`.
//! Prints `{"listen":"127.0.0.1:PORT"}` on stdout once it accepts.

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "benchmark tool: a failed step should stop it loudly, and it spawns plain tasks"
)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion","created":1764115200,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. This is a fixed answer from the benchmark's mock upstream, long enough to look like a short reply.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":31,"total_tokens":73},"system_fingerprint":"fp_bench0001"}"#;

const CHUNKS: usize = 20;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut delay_ms: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap(),
            "--chunk-delay-ms" => delay_ms = args.next().unwrap().parse().unwrap(),
            // `cargo bench` passes `--bench`; nothing else is expected.
            "--bench" => {}
            other => {
                eprintln!("mock_upstream: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    let listener = TcpListener::bind(&listen).await.unwrap();
    println!("{{\"listen\":\"{}\"}}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, delay_ms));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    default_delay: u64,
) -> Result<Response<BoxBody>, Infallible> {
    let delay_ms = req
        .headers()
        .get("x-mock-chunk-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_delay);
    // Read the body frame by frame: only the first few KB are searched for
    // the stream flag (the flag sits at the top of the benchmark's bodies),
    // the rest is dropped as it arrives.
    let mut body = req.into_body();
    let mut head = Vec::with_capacity(4096);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            if head.len() < 4096 {
                let take = data.len().min(4096 - head.len());
                head.extend_from_slice(&data[..take]);
            }
        }
    }
    let streaming = find(&head, b"\"stream\":true") || find(&head, b"\"stream\": true");
    if !streaming {
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .header("x-request-id", "req_mock_upstream")
            .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())).boxed())
            .unwrap());
    }
    let stream = async_stream::stream! {
        for i in 0..CHUNKS {
            if delay_ms > 0 && i > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let role = if i == 0 { r#""role":"assistant","# } else { "" };
            let chunk = format!(
                "data: {{\"id\":\"chatcmpl-bench1\",\"object\":\"chat.completion.chunk\",\"created\":1764115200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
            );
            yield Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)));
        }
        yield Ok(Frame::data(Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-bench1\",\"object\":\"chat.completion.chunk\",\"created\":1764115200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":20,\"total_tokens\":62}}\n\ndata: [DONE]\n\n",
        )));
    };
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(stream).boxed())
        .unwrap())
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
