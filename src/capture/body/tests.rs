use serde_json::json;

use super::*;

const BOUNDARY: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

fn transcription_form() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    b.extend_from_slice(
        b"Content-Disposition: form-data; name=\"file\"; filename=\"meeting notes.wav\"\r\n",
    );
    b.extend_from_slice(b"Content-Type: audio/wav\r\n\r\n");
    b.extend_from_slice(b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\xff\xfe");
    b.extend_from_slice(format!("\r\n--{BOUNDARY}\r\n").as_bytes());
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"model\"\r\n\r\n");
    b.extend_from_slice(b"whisper-1");
    b.extend_from_slice(format!("\r\n--{BOUNDARY}\r\n").as_bytes());
    b.extend_from_slice(b"Content-Disposition: form-data; name=\"prompt\"\r\n");
    b.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\n");
    b.extend_from_slice("Names: Zoë; \"Bob\"\r\nline two".as_bytes());
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[test]
fn empty_is_null() {
    assert_eq!(
        body_to_value(b"", Some("application/json"), false),
        Value::Null
    );
    assert_eq!(body_to_value(b"", None, true), Value::Null);
}

#[test]
fn json_is_parsed() {
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for ct in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        Some("application/vnd.api+json"),
        None,
        Some("text/plain"),
    ] {
        assert_eq!(
            body_to_value(body, ct, false),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            "{ct:?}"
        );
    }
    assert_eq!(
        body_to_value(b"42", Some("application/json"), false),
        json!(42)
    );
    assert_eq!(body_to_value(b" [1, 2] ", None, false), json!([1, 2]));
}

#[test]
fn truncated_json_is_kept_as_text() {
    let body = "{\"messages\":[{\"content\":\"héllo wörld".as_bytes();
    // Cut inside the two-byte `ö`.
    let cut = body.len() - 4;
    assert_eq!(body[cut - 1], 0xC3);
    let v = body_to_value(&body[..cut], Some("application/json"), true);
    assert_eq!(v, json!("{\"messages\":[{\"content\":\"héllo w"));
    let v = body_to_value(&body[..cut], None, true);
    assert_eq!(v, json!("{\"messages\":[{\"content\":\"héllo w"));
}

#[test]
fn invalid_json_that_is_not_truncated_is_text() {
    assert_eq!(
        body_to_value(b"{not json", Some("application/json"), false),
        json!("{not json")
    );
    assert_eq!(
        body_to_value(b"{\"a\":\"\xff\"}", Some("application/json"), false),
        json!("{\"a\":\"\u{FFFD}\"}")
    );
}

#[test]
fn text_and_form_bodies_are_strings() {
    assert_eq!(
        body_to_value(b"Internal Server Error", Some("text/plain"), false),
        json!("Internal Server Error")
    );
    assert_eq!(
        body_to_value(
            b"a=1&b=two",
            Some("application/x-www-form-urlencoded"),
            false
        ),
        json!("a=1&b=two")
    );
    assert_eq!(
        body_to_value(
            "<h1>502 Bad Gateway</h1>".as_bytes(),
            Some("text/html"),
            false
        ),
        json!("<h1>502 Bad Gateway</h1>")
    );
    assert_eq!(body_to_value(b"plain", None, false), json!("plain"));
    // A text type with bad bytes is still text.
    assert_eq!(
        body_to_value(b"caf\xe9", Some("text/plain; charset=latin1"), false),
        json!("caf\u{FFFD}")
    );
}

/// A binary summary without its digest and preview, for comparison.
fn described(bytes: &[u8], content_type: Option<&str>) -> Value {
    let mut v = body_to_value(bytes, content_type, false);
    let obj = v.as_object_mut().unwrap();
    assert_eq!(
        obj.remove("sha256").unwrap(),
        json!(hex::encode(Sha256::digest(bytes)))
    );
    assert!(obj.remove("preview").unwrap().is_string());
    v
}

#[test]
fn binary_is_described_not_copied() {
    let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
    assert_eq!(
        described(png, Some("image/png")),
        json!({"binary": true, "content_type": "image/png", "bytes": png.len()})
    );
    assert_eq!(
        described(b"\xff\xfe\x00\x01", None),
        json!({"binary": true, "content_type": null, "bytes": 4})
    );
    // Valid UTF-8 is still binary when the type says so.
    assert_eq!(
        described(b"ID3 tag", Some("audio/mpeg")),
        json!({"binary": true, "content_type": "audio/mpeg", "bytes": 7})
    );
    assert_eq!(
        described(b"{\"a\":1}", Some("application/octet-stream")),
        json!({"binary": true, "content_type": "application/octet-stream", "bytes": 7})
    );
    // NUL bytes in untyped content mean binary.
    assert_eq!(body_to_value(b"ab\0cd", None, false)["binary"], json!(true));
    assert_eq!(
        body_to_value(png, Some("image/png"), false)["preview"],
        json!(".PNG........IHDR")
    );
}

/// Stored as text, a NUL-filled body would be six bytes of `\u0000` per
/// byte; whatever its declared type it is summarised instead.
#[test]
fn control_heavy_text_is_summarised() {
    let mut nul_rich = b"{\"prompt\": \"hi".to_vec();
    nul_rich.extend(std::iter::repeat_n(0u8, 4096));
    for ct in [Some("application/json"), Some("text/plain"), None] {
        let v = body_to_value(&nul_rich, ct, false);
        assert_eq!(v["binary"], json!(true), "{ct:?}");
        assert_eq!(v["bytes"], json!(nul_rich.len()));
        assert_eq!(v["sha256"], json!(hex::encode(Sha256::digest(&nul_rich))));
        assert!(v["preview"]
            .as_str()
            .unwrap()
            .starts_with("{\"prompt\": \"hi..."));
        assert!(serde_json::to_string(&v).unwrap().len() < 300);
    }
    // A few control characters in ordinary text stay text.
    let text = format!("line\x0b{}", "x".repeat(100));
    assert_eq!(
        body_to_value(text.as_bytes(), Some("text/plain"), false),
        json!(text)
    );
}

#[test]
fn multipart_fields_are_described_without_file_contents() {
    let body = transcription_form();
    let v = body_to_value(&body, Some(&form_type()), false);
    assert_eq!(
        v,
        json!({"multipart": [
            {"name": "file", "filename": "meeting notes.wav", "content_type": "audio/wav", "bytes": 26},
            {"name": "model", "filename": null, "content_type": null, "bytes": 9, "text": "whisper-1"},
            {"name": "prompt", "filename": null, "content_type": "text/plain; charset=utf-8",
             "bytes": 28, "text": "Names: Zoë; \"Bob\"\r\nline two"},
        ]})
    );
}

#[test]
fn multipart_cut_short_describes_what_arrived() {
    let body = transcription_form();
    let at = body.windows(9).position(|w| w == b"whisper-1").unwrap() + 4;
    let v = body_to_value(&body[..at], Some(&form_type()), true);
    let parts = v["multipart"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["name"], "file");
    assert!(parts[0].get("truncated").is_none());
    assert_eq!(parts[1]["text"], "whis");
    assert_eq!(parts[1]["truncated"], true);

    // Cut inside the first part's headers: nothing can be described.
    let v = body_to_value(&body[..60], Some(&form_type()), true);
    assert_eq!(v, json!({"multipart": []}));
}

#[test]
fn multipart_quirks() {
    // Quoted boundary, bare LF line ends, big fields kept by size only,
    // RFC 8187 file names.
    let big = "x".repeat(MAX_FIELD_TEXT + 1);
    let body = format!(
        "preamble\n--b\"q\nContent-Disposition: form-data; name=\"big\"\n\n{big}\n\
         --b\"q\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\n\
         Content-Type: application/pdf\n\n%PDF-1.7\n--b\"q--\n"
    );
    let v = body_to_value(
        body.as_bytes(),
        Some(r#"multipart/form-data; boundary="b\"q""#),
        false,
    );
    let parts = v["multipart"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["bytes"], MAX_FIELD_TEXT + 1);
    assert!(parts[0].get("text").is_none());
    assert_eq!(parts[1]["filename"], "résumé.pdf");
    assert_eq!(parts[1]["content_type"], "application/pdf");
    assert_eq!(parts[1]["bytes"], 8);
}

#[test]
fn multipart_without_boundary_or_delimiter() {
    // No boundary parameter: nothing to split on, so it is plain text.
    assert_eq!(
        body_to_value(b"field data", Some("multipart/form-data"), false),
        json!("field data")
    );
    assert_eq!(
        body_to_value(b"no delimiter here", Some(&form_type()), false),
        json!({"multipart": []})
    );
}

#[test]
fn utf8_tail_detection() {
    assert_eq!(incomplete_tail_start(b"abc"), 3);
    assert_eq!(incomplete_tail_start("é".as_bytes()), 2);
    assert_eq!(incomplete_tail_start(&"é".as_bytes()[..1]), 0);
    assert_eq!(incomplete_tail_start(&"ab€".as_bytes()[..4]), 2);
    assert_eq!(incomplete_tail_start(&"a😀".as_bytes()[..4]), 1);
    assert_eq!(incomplete_tail_start(b""), 0);
    assert_eq!(lossy_text(b"ab\xff\xe2\x82", true), "ab\u{FFFD}");
}

#[test]
fn a_parsed_body_is_reused_only_where_it_would_be_read_as_json() {
    let body = br#"{"model":"gpt-4o","messages":[]}"#;
    let form = form_type();
    for (ct, reused) in [
        (Some("application/json"), true),
        (None, true),
        (Some("text/plain"), true),
        (Some("application/octet-stream"), false),
        (Some(form.as_str()), false),
    ] {
        assert_eq!(body_is_parsed_as_json(body, ct), reused, "{ct:?}");
        // Where it says yes, the value is the JSON one.
        if reused {
            assert_eq!(body_to_value(body, ct, false)["model"], "gpt-4o");
        } else {
            assert!(
                body_to_value(body, ct, false).get("model").is_none(),
                "{ct:?}"
            );
        }
    }
    assert!(!body_is_parsed_as_json(b"", Some("application/json")));
}

/// A boundary hundreds of KiB long over a body of a MiB that nearly matches
/// it everywhere: a window-by-window search would compare ~2·10^11 bytes;
/// the linear one finishes at once.
#[test]
fn multipart_search_is_linear_in_a_long_boundary() {
    let boundary = format!("{}x", "-".repeat(300 * 1024));
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let mut body = "-".repeat(1024 * 1024).into_bytes();
    assert_eq!(
        body_to_value(&body, Some(&content_type), false),
        json!({"multipart": []})
    );
    // The same body with one real part after the near-misses.
    body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.extend_from_slice(b"Content-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let value = body_to_value(&body, Some(&content_type), false);
    assert_eq!(value["multipart"][0]["name"], json!("model"));
    assert_eq!(value["multipart"][0]["text"], json!("whisper-1"));
}
