//! The few response facts a RESPONSE event lifts out of the body: model,
//! token usage in one normalised shape, and why generation stopped.

use serde_json::{json, Value};

/// Model, usage and finish reason of one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The model upstream reports (the caller falls back to the requested
    /// one).
    pub model: Option<String>,
    /// `{"prompt_tokens", "completion_tokens", "total_tokens"}`, all
    /// integers, whatever shape upstream used.
    pub usage: Option<Value>,
    /// The first choice's `finish_reason`; for the Responses API the
    /// `status`, or the `incomplete_details.reason` of an incomplete one.
    pub finish_reason: Option<String>,
}

/// Summarises a (possibly reassembled) response body of `operation`.
pub fn summarize(operation: &str, response: &Value) -> Summary {
    Summary {
        model: response
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
        usage: response
            .get("usage")
            .and_then(|u| normalize_usage(operation, u)),
        finish_reason: finish_reason(operation, response),
    }
}

/// The `model` and `stream` flag of a request body. Also understands the
/// `{"multipart": [...]}` shape of [`super::body::body_to_value`], where
/// they are form fields (audio transcription).
pub fn request_model_and_stream(body: &Value) -> (Option<String>, bool) {
    if let Some(parts) = body.get("multipart").and_then(Value::as_array) {
        let field = |name: &str| {
            parts
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("text"))
                .and_then(Value::as_str)
                .map(str::trim)
        };
        let model = field("model").filter(|m| !m.is_empty()).map(str::to_owned);
        let stream = field("stream").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        return (model, stream);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    (model, stream)
}

/// Maps every known usage shape onto prompt/completion/total. The shape is
/// recognised by its keys rather than trusted from the operation, because
/// compatible servers and newer endpoints (audio, images) mix them.
fn normalize_usage(operation: &str, usage: &Value) -> Option<Value> {
    let int = |k: &str| usage.get(k).and_then(as_count);
    let prompt = int("prompt_tokens").or_else(|| int("input_tokens"));
    let completion = int("completion_tokens").or_else(|| int("output_tokens"));
    let total = int("total_tokens");
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return None;
    }
    let completion = match (completion, operation) {
        (Some(c), _) => c,
        // Embeddings report no completion tokens at all.
        (None, "embeddings.create") => 0,
        (None, _) => total.zip(prompt).map_or(0, |(t, p)| t.saturating_sub(p)),
    };
    let prompt = prompt.unwrap_or_else(|| total.map_or(0, |t| t.saturating_sub(completion)));
    let total = total.unwrap_or(prompt.saturating_add(completion));
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    }))
}

/// Token counts are integers, but some servers send them as `12.0`.
fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
            .map(|f| f as u64)
    })
}

fn finish_reason(operation: &str, response: &Value) -> Option<String> {
    let from_choices = || {
        response
            .get("choices")?
            .as_array()?
            .first()?
            .get("finish_reason")?
            .as_str()
            .map(str::to_owned)
    };
    let from_status = || {
        let status = response.get("status")?.as_str()?;
        let reason = response
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .filter(|_| status == "incomplete");
        Some(reason.unwrap_or(status).to_owned())
    };
    if operation == "responses.create" || response.get("object") == Some(&json!("response")) {
        from_status().or_else(from_choices)
    } else {
        from_choices()
    }
}

#[cfg(test)]
mod tests;
