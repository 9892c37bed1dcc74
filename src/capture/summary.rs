//! The few response facts a RESPONSE event lifts out of the body: model,
//! token usage in one normalised shape, and why generation stopped.
//!
//! They are read through [`JsonRead`], from a parsed `Value` or straight
//! from a [`super::json_view::JsonView`] of the raw body, with the same outcome.

use std::borrow::Cow;

use serde::Serialize;
#[cfg(test)]
use serde_json::json;
use serde_json::Value;

use super::json_view::{At, NodeId};
use super::short_text::ShortText;

/// Model, usage and finish reason of one response; usage as [`Usage`]
/// (what a record stores), or as the value it serialises to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary<U = Value> {
    /// The model upstream reports (the caller falls back to the requested
    /// one).
    pub model: Option<ShortText>,
    /// `{"prompt_tokens", "completion_tokens", "total_tokens"}`, all
    /// integers, whatever shape upstream used.
    pub usage: Option<U>,
    /// The first choice's `finish_reason`; for the Responses API the
    /// `status`, or the `incomplete_details.reason` of an incomplete one.
    pub finish_reason: Option<ShortText>,
}

/// Read access to a JSON value, as `serde_json::Value` gives it.
pub trait JsonRead<'s>: Copy {
    /// An object's member.
    fn get(self, key: &str) -> Option<Self>;
    /// An array's item.
    fn item(self, index: usize) -> Option<Self>;
    fn is_array(self) -> bool;
    fn text(self) -> Option<Cow<'s, str>>;
    fn as_bool(self) -> Option<bool>;
    fn as_u64(self) -> Option<u64>;
    fn as_f64(self) -> Option<f64>;
}

/// A node of a [`super::json_view::JsonView`] read as its stored copy:
/// strings the cleaning replaced read as their replacement.
#[derive(Debug, Clone, Copy)]
pub struct Cleaned<'v, 'a> {
    pub at: At<'v, 'a>,
    /// Sorted by node, as [`crate::policy::ViewInspection`] gives them.
    pub replaced: &'v [(NodeId, String)],
}

/// Token usage in its normalised shape. Serialises as the object
/// `{"completion_tokens", "prompt_tokens", "total_tokens"}`, keys in
/// canonical (sorted) order, with no map built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// [`summarize_usage`] with the usage as a value.
#[cfg(test)]
pub fn summarize<'s>(operation: &str, response: impl JsonRead<'s>) -> Summary {
    let summary = summarize_usage(operation, response);
    Summary {
        model: summary.model,
        usage: summary
            .usage
            .map(|u| serde_json::to_value(u).unwrap_or_default()),
        finish_reason: summary.finish_reason,
    }
}

/// Summarises a (possibly reassembled) response body of `operation`.
pub fn summarize_usage<'s>(operation: &str, response: impl JsonRead<'s>) -> Summary<Usage> {
    Summary {
        model: response
            .get("model")
            .and_then(JsonRead::text)
            .filter(|m| !m.is_empty())
            .map(|m| ShortText::new(&m)),
        usage: response
            .get("usage")
            .and_then(|u| normalize_usage(operation, u)),
        finish_reason: finish_reason(operation, response),
    }
}

/// The `model` and `stream` flag of a request body. Also understands the
/// `{"multipart": [...]}` shape of [`super::body::body_to_value`], where
/// they are form fields (audio transcription).
pub fn request_model_and_stream<'s>(body: impl JsonRead<'s>) -> (Option<ShortText>, bool) {
    if let Some(parts) = body.get("multipart").filter(|p| p.is_array()) {
        let field = |name: &str| {
            (0..)
                .map_while(|i| parts.item(i))
                .find(|p| p.get("name").and_then(JsonRead::text).as_deref() == Some(name))
                .and_then(|p| p.get("text"))
                .and_then(JsonRead::text)
        };
        let model = field("model")
            .map(|m| ShortText::new(m.trim()))
            .filter(|m| !m.is_empty());
        let stream = field("stream").is_some_and(|s| s.trim().eq_ignore_ascii_case("true"));
        return (model, stream);
    }
    let model = body
        .get("model")
        .and_then(JsonRead::text)
        .filter(|m| !m.is_empty())
        .map(|m| ShortText::new(&m));
    let stream = body
        .get("stream")
        .and_then(JsonRead::as_bool)
        .unwrap_or(false);
    (model, stream)
}

/// Maps every known usage shape onto prompt/completion/total. The shape is
/// recognised by its keys rather than trusted from the operation, because
/// compatible servers and newer endpoints (audio, images) mix them.
fn normalize_usage<'s>(operation: &str, usage: impl JsonRead<'s>) -> Option<Usage> {
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
    Some(Usage {
        completion_tokens: completion,
        prompt_tokens: prompt,
        total_tokens: total,
    })
}

/// Token counts are integers, but some servers send them as `12.0`.
fn as_count<'s>(v: impl JsonRead<'s>) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
            .map(|f| f as u64)
    })
}

fn finish_reason<'s>(operation: &str, response: impl JsonRead<'s>) -> Option<ShortText> {
    let from_choices = || {
        response
            .get("choices")?
            .item(0)?
            .get("finish_reason")?
            .text()
            .map(|reason| ShortText::new(&reason))
    };
    let from_status = || {
        let status = response.get("status")?.text()?;
        let reason = response
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(JsonRead::text)
            .filter(|_| status == "incomplete");
        Some(ShortText::new(&reason.unwrap_or(status)))
    };
    let is_response = response
        .get("object")
        .and_then(JsonRead::text)
        .is_some_and(|o| o == "response");
    if operation == "responses.create" || is_response {
        from_status().or_else(from_choices)
    } else {
        from_choices()
    }
}

// === impl JsonRead ===

impl<'s> JsonRead<'s> for &'s Value {
    fn get(self, key: &str) -> Option<Self> {
        Value::get(self, key)
    }

    fn item(self, index: usize) -> Option<Self> {
        self.as_array()?.get(index)
    }

    fn is_array(self) -> bool {
        Value::is_array(self)
    }

    fn text(self) -> Option<Cow<'s, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn as_bool(self) -> Option<bool> {
        Value::as_bool(self)
    }

    fn as_u64(self) -> Option<u64> {
        Value::as_u64(self)
    }

    fn as_f64(self) -> Option<f64> {
        Value::as_f64(self)
    }
}

impl<'v, 'a: 'v> JsonRead<'v> for Cleaned<'v, 'a> {
    fn get(self, key: &str) -> Option<Self> {
        self.at.get(key).map(|at| Self { at, ..self })
    }

    fn item(self, index: usize) -> Option<Self> {
        let at = self.at.items()?.nth(index)?;
        Some(Self { at, ..self })
    }

    fn is_array(self) -> bool {
        self.at.items().is_some()
    }

    fn text(self) -> Option<Cow<'v, str>> {
        let text = self.at.as_str()?;
        match self
            .replaced
            .binary_search_by_key(&self.at.id(), |(node, _)| *node)
        {
            Ok(i) => Some(Cow::Borrowed(self.replaced[i].1.as_str())),
            Err(_) => Some(text),
        }
    }

    fn as_bool(self) -> Option<bool> {
        self.at.as_bool()
    }

    fn as_u64(self) -> Option<u64> {
        self.at.as_number()?.as_u64()
    }

    fn as_f64(self) -> Option<f64> {
        self.at.as_number()?.as_f64()
    }
}

#[cfg(test)]
mod tests;
