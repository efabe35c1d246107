//! JSON request bodies: media type, size limit (chunked bodies included),
//! nesting depth and shape are checked before any handler runs, and fields
//! are read with per-field errors in the contract's shape.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use gatehouse_domain::FieldErrors;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The deepest nesting a body may have.
pub const MAX_DEPTH: usize = 32;

/// The body size limit, shared through app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A request body that is a JSON object.
#[derive(Debug)]
pub struct JsonBody(pub Map<String, Value>);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Nesting depth of a JSON text, counted without parsing (so a hostile body
/// cannot exhaust the stack first).
fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a complete body into an object, or says why not.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json("The request body is empty."));
    }
    if depth_exceeds(bytes, MAX_DEPTH) {
        return Err(ApiError::invalid_json("The JSON is nested deeper than 32 levels."));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_json("The body must be a JSON object.")),
        Err(_) => Err(ApiError::invalid_json("The body is not valid JSON.")),
    }
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<web::Data<BodyLimit>>().map_or(64 * 1024, |l| l.0);
        let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"));
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let json_declared = content_type.map(is_json);
        let mut payload = payload.take();
        Box::pin(async move {
            if json_declared == Some(false) {
                return Err(ApiError::unsupported_media_type());
            }
            if declared_length.is_some_and(|length| length > limit) {
                return Err(ApiError::payload_too_large(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| ApiError::invalid_json("The request body could not be read."))?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::payload_too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            // No Content-Type at all: an empty body is a JSON problem, anything else the wrong media type.
            if json_declared.is_none() && !body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::unsupported_media_type());
            }
            parse_object(&body).map(JsonBody)
        })
    }
}

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const BLANK: &str = "This field may not be blank.";
const NOT_STRING: &str = "Not a valid string.";
const NOT_BOOLEAN: &str = "Must be a valid boolean.";
const NOT_OBJECT: &str = "Expected an object.";

/// Reads fields from an object, collecting every error before answering.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
    errors: FieldErrors,
}

impl JsonBody {
    pub fn fields(self) -> Fields {
        Fields { map: self.0, prefix: String::new(), errors: FieldErrors::new() }
    }
}

impl Fields {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&mut self, name: &str, message: &str) {
        let key = self.key(name);
        self.errors.add(&key, message);
    }

    /// Records an error found by a cross-field rule.
    pub fn error(&mut self, field: &str, message: &str) {
        self.errors.add(field, message);
    }

    /// A string that must be present and not blank. Passwords are not trimmed.
    pub fn required_str(&mut self, name: &str) -> String {
        match self.map.remove(name) {
            None => self.fail(name, REQUIRED),
            Some(Value::Null) => self.fail(name, NOT_NULL),
            Some(Value::String(s)) if s.trim().is_empty() => self.fail(name, BLANK),
            Some(Value::String(s)) => return s,
            Some(_) => self.fail(name, NOT_STRING),
        }
        String::new()
    }

    /// A string that may be absent (but not null).
    pub fn optional_str(&mut self, name: &str) -> Option<String> {
        match self.map.remove(name) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) => {
                self.fail(name, NOT_NULL);
                None
            }
            Some(_) => {
                self.fail(name, NOT_STRING);
                None
            }
        }
    }

    /// A string that may be absent (`None`) or null (`Some(None)`).
    pub fn nullable_str(&mut self, name: &str) -> Option<Option<String>> {
        match self.map.remove(name) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => {
                self.fail(name, NOT_STRING);
                None
            }
        }
    }

    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.map.remove(name) {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                self.fail(name, NOT_BOOLEAN);
                None
            }
        }
    }

    /// A list of strings that may be absent.
    pub fn optional_str_list(&mut self, name: &str) -> Option<Vec<String>> {
        match self.map.remove(name) {
            None => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                Some(items.into_iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
            }
            Some(_) => {
                self.fail(name, "Expected a list of names.");
                None
            }
        }
    }

    /// A nested object, read with dotted error keys (`profile.phone`).
    pub fn optional_object(&mut self, name: &str) -> Option<Fields> {
        match self.map.remove(name) {
            None => None,
            Some(Value::Object(map)) => {
                Some(Fields { map, prefix: format!("{}.", self.key(name)), errors: FieldErrors::new() })
            }
            Some(_) => {
                self.fail(name, NOT_OBJECT);
                None
            }
        }
    }

    /// Folds a nested object's errors into this one's.
    pub fn absorb(&mut self, nested: Fields) {
        self.errors.merge(nested.errors);
    }

    /// `Ok` when every field read well; unknown fields are ignored, as DRF does.
    pub fn finish(self) -> Result<(), ApiError> {
        self.errors.finish(()).map_err(ApiError::validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<Map<String, Value>, ApiError>) -> &'static str {
        result.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(code(parse_object(b"{}")), "ok");
        assert_eq!(code(parse_object(b"")), "invalid_json");
        assert_eq!(code(parse_object(b"  \n")), "invalid_json");
        assert_eq!(code(parse_object(b"[1, 2]")), "invalid_json");
        assert_eq!(code(parse_object(b"\"text\"")), "invalid_json");
        assert_eq!(code(parse_object(b"{\"a\": ")), "invalid_json");
        assert_eq!(code(parse_object(b"\xff\xfe")), "invalid_json");
    }

    #[test]
    fn nesting_is_limited_to_32_levels() {
        let nested = |levels: usize| format!("{}{}", "{\"a\":".repeat(levels), "1".to_owned() + &"}".repeat(levels));
        assert_eq!(code(parse_object(nested(32).as_bytes())), "ok");
        assert_eq!(code(parse_object(nested(33).as_bytes())), "invalid_json");
        assert_eq!(code(parse_object(format!("{{\"a\":{}", "[".repeat(100_000)).as_bytes())), "invalid_json");
        assert_eq!(code(parse_object(br#"{"a": "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"}"#)), "ok");
    }

    #[test]
    fn fields_collect_every_error() {
        let map = parse_object(br#"{"a": null, "b": 3, "c": "  ", "d": "x", "e": "yes", "p": {"phone": 5}}"#).unwrap();
        let mut fields = JsonBody(map).fields();
        fields.required_str("a");
        fields.required_str("b");
        fields.required_str("c");
        assert_eq!(fields.required_str("d"), "x");
        fields.required_str("missing");
        fields.optional_bool("e");
        let mut profile = fields.optional_object("p").unwrap();
        profile.nullable_str("phone");
        fields.absorb(profile);
        let error = fields.finish().unwrap_err();
        assert_eq!(error.code(), "validation_error");
        let rendered = format!("{error:?}");
        for key in ["\"a\"", "\"b\"", "\"c\"", "\"missing\"", "\"e\"", "\"p.phone\""] {
            assert!(rendered.contains(key), "{key} in {rendered}");
        }
    }
}
