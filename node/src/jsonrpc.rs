//! JSON-RPC 2.0 framing to the letter of the specification, in front of
//! jsonrpsee's method table.
//!
//! jsonrpsee parses ids as unsigned integers or strings only, answers
//! notifications with `null` without running them, and reports an oversized
//! batch answer with its own code. This module reads the request itself:
//! it checks each request object by the specification's rules, keeps the
//! client's id as the exact text it sent (`-1`, `1.5`, `1e3` and `-0` are
//! valid ids and come back unchanged), calls the method through jsonrpsee
//! under an internal id, runs notifications and drops their answers, and
//! assembles batches. docs/RPC.md ("Requests, batches and notifications")
//! describes the answers.

use std::collections::BTreeMap;

use jsonrpsee::types::ErrorCode;
use jsonrpsee::Methods;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The body is larger than `[rpc] max_body_bytes`.
pub const OVERSIZED_REQUEST: i32 = -32007;
/// The answer is larger than `[rpc] max_response_bytes`.
pub const OVERSIZED_RESPONSE: i32 = -32008;
/// More requests in flight than `[rpc] max_concurrent_requests`.
pub const SERVER_BUSY: i32 = -32009;
/// A batch longer than `[rpc] max_batch_len`.
pub const BATCH_TOO_LONG: i32 = -32010;

/// Runs JSON-RPC requests against the node's methods.
#[derive(Clone)]
pub struct Dispatcher {
    methods: Methods,
    max_response_bytes: usize,
    max_batch_len: usize,
}

/// One request object, checked: its method, params and id as sent.
struct Call<'a> {
    method: String,
    params: Option<&'a RawValue>,
    /// `None` for a notification; otherwise the id's JSON text.
    id: Option<&'a str>,
}

/// The answer object for `id` (JSON text) with an error.
pub fn error_answer(id: &str, code: i32, message: &str, data: Option<&str>) -> String {
    let error = match data {
        Some(data) => serde_json::json!({ "code": code, "message": message, "data": data }),
        None => serde_json::json!({ "code": code, "message": message }),
    };
    format!(r#"{{"jsonrpc":"2.0","error":{error},"id":{id}}}"#)
}

fn standard(id: &str, code: ErrorCode, data: Option<&str>) -> String {
    error_answer(id, code.code(), code.message(), data)
}

impl Dispatcher {
    /// A dispatcher over `methods` with the node's answer limits.
    pub fn new(
        methods: impl Into<Methods>,
        max_response_bytes: usize,
        max_batch_len: usize,
    ) -> Self {
        Dispatcher {
            methods: methods.into(),
            max_response_bytes,
            max_batch_len,
        }
    }

    /// Answers one body of JSON text: `None` when nothing is to be sent
    /// back (a notification, or a batch of notifications only).
    pub async fn handle(&self, body: &str) -> Option<String> {
        // The whole text is parsed first, so that a syntax error, or a string
        // that is not Unicode (a lone surrogate escape, wherever it is), is
        // one answer: -32700 for the body.
        if let Err(e) = serde_json::from_str::<Value>(body) {
            let detail = match e.to_string().contains("surrogate") {
                true => format!("{e}: a string holds a lone UTF-16 surrogate escape; JSON text sent here must be Unicode"),
                false => e.to_string(),
            };
            return Some(standard("null", ErrorCode::ParseError, Some(&detail)));
        }
        if body.trim_start().starts_with('[') {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(body) else {
                return Some(standard("null", ErrorCode::InternalError, None));
            };
            return self.batch(&items).await;
        }
        let Ok(item) = serde_json::from_str::<&RawValue>(body) else {
            return Some(standard("null", ErrorCode::InternalError, None));
        };
        let answer = self.one(item).await?;
        if answer.len() > self.max_response_bytes {
            return Some(self.too_big(id_of(item)));
        }
        Some(answer)
    }

    async fn batch(&self, items: &[&RawValue]) -> Option<String> {
        if items.is_empty() {
            return Some(standard(
                "null",
                ErrorCode::InvalidRequest,
                Some("an empty batch"),
            ));
        }
        if items.len() > self.max_batch_len {
            return Some(error_answer(
                "null",
                BATCH_TOO_LONG,
                "Batch too long",
                Some(&format!(
                    "{} requests in one batch; at most {} ([rpc] max_batch_len); none was run",
                    items.len(),
                    self.max_batch_len
                )),
            ));
        }
        // In order, one after another: a batch of transfers from one sender
        // is admitted nonce after nonce.
        let mut answers: Vec<String> = Vec::new();
        let mut size = 2;
        let mut too_big = false;
        for item in items {
            let Some(answer) = self.one(item).await else {
                continue;
            };
            size += answer.len() + 1;
            if size > self.max_response_bytes {
                // The rest still runs (they may be transfers), but their
                // answers are not kept.
                too_big = true;
                answers.clear();
            }
            if !too_big {
                answers.push(answer);
            }
        }
        if too_big {
            return Some(error_answer(
                "null",
                OVERSIZED_RESPONSE,
                "Response is too big",
                Some(&format!(
                    "the batch's answers exceed {} bytes ([rpc] max_response_bytes); every request was run; ask for less in one batch",
                    self.max_response_bytes
                )),
            ));
        }
        match answers.is_empty() {
            true => None,
            false => Some(format!("[{}]", answers.join(","))),
        }
    }

    fn too_big(&self, id: &str) -> String {
        error_answer(
            id,
            OVERSIZED_RESPONSE,
            "Response is too big",
            Some(&format!(
                "the answer exceeds {} bytes ([rpc] max_response_bytes); ask for less",
                self.max_response_bytes
            )),
        )
    }

    /// Runs one request object; `None` for a notification.
    async fn one(&self, item: &RawValue) -> Option<String> {
        let call = match parse_call(item) {
            Ok(call) => call,
            Err((id, detail)) => {
                return Some(standard(id, ErrorCode::InvalidRequest, Some(&detail)))
            }
        };
        // The method runs under an internal id; the client's id is put back
        // into the answer as the text it sent.
        let method = serde_json::to_string(&call.method).unwrap_or_default();
        let request = match call.params {
            Some(params) => {
                format!(r#"{{"jsonrpc":"2.0","id":0,"method":{method},"params":{params}}}"#)
            }
            None => format!(r#"{{"jsonrpc":"2.0","id":0,"method":{method}}}"#),
        };
        let answer = self.methods.raw_json_request(&request, 1).await;
        // A notification has run; it gets no answer.
        let id = call.id?;
        let answer = match answer {
            Ok((answer, _)) => answer,
            Err(e) => return Some(standard(id, ErrorCode::InternalError, Some(&e.to_string()))),
        };
        Some(reframe(answer.get(), id))
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// jsonrpsee's answer with the client's id in place of the internal one.
fn reframe(answer: &str, id: &str) -> String {
    match serde_json::from_str::<Answer>(answer) {
        Ok(Answer {
            result: Some(result),
            ..
        }) => format!(r#"{{"jsonrpc":"2.0","result":{result},"id":{id}}}"#),
        Ok(Answer {
            error: Some(error), ..
        }) => format!(r#"{{"jsonrpc":"2.0","error":{error},"id":{id}}}"#),
        _ => standard(id, ErrorCode::InternalError, None),
    }
}

/// The id to answer an invalid request with: its own when that is a valid
/// id, `null` otherwise.
fn id_of(item: &RawValue) -> &str {
    serde_json::from_str::<BTreeMap<String, &RawValue>>(item.get())
        .ok()
        .and_then(|fields| fields.get("id").map(|id| id.get()))
        .filter(|id| valid_id(id))
        .unwrap_or("null")
}

/// A string, a number or `null` (the text of a parsed JSON value).
fn valid_id(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')) || text == "null"
}

/// Checks one request object; an invalid one gives the id to answer with
/// and what is wrong.
fn parse_call(item: &RawValue) -> Result<Call<'_>, (&str, String)> {
    let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(item.get()) else {
        return Err(("null", "a request must be a JSON object".into()));
    };
    let id = match fields.get("id") {
        None => None,
        Some(id) if valid_id(id.get()) => Some(id.get()),
        Some(_) => return Err(("null", "id must be a string, a number or null".into())),
    };
    let answer_id = id.unwrap_or("null");
    match fields.get("jsonrpc").map(|v| v.get()) {
        Some(r#""2.0""#) => {}
        Some(_) => return Err((answer_id, r#"jsonrpc must be "2.0""#.into())),
        None => return Err((answer_id, r#"the member jsonrpc: "2.0" is missing"#.into())),
    }
    let method = match fields
        .get("method")
        .map(|m| serde_json::from_str::<String>(m.get()))
    {
        Some(Ok(method)) => method,
        Some(Err(_)) => return Err((answer_id, "method must be a string".into())),
        None => return Err((answer_id, "the member method is missing".into())),
    };
    let params = match fields.get("params") {
        None => None,
        Some(p) if p.get().starts_with(['[', '{']) => Some(*p),
        Some(_) => {
            return Err((
                answer_id,
                "params must be an array (by position) or an object (by name)".into(),
            ))
        }
    };
    Ok(Call { method, params, id })
}
