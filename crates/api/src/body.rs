//! JSON request bodies: media type, size limit (chunked bodies included),
//! nesting depth and shape are checked before any handler runs, then the body
//! is read into its type with every field's error in the contract's shape.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use std::cell::RefCell;

use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use gatehouse_domain::error::NON_FIELD_ERRORS;
use gatehouse_domain::FieldErrors;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The deepest nesting a body may have.
pub const MAX_DEPTH: usize = 32;

/// How much of a body is read, and for how long, shared through app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub time: std::time::Duration,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self { bytes: 64 * 1024, time: std::time::Duration::from_secs(10) }
    }
}

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
        read_object(req, payload, false)
    }
}

/// Reads the body as [`JsonBody`] does; with `empty_is_object`, a body with
/// nothing in it (and no media type) reads as `{}`.
fn read_object(
    req: &HttpRequest,
    payload: &mut Payload,
    empty_is_object: bool,
) -> LocalBoxFuture<'static, Result<JsonBody, ApiError>> {
    let BodyLimit { bytes: limit, time } =
        req.app_data::<web::Data<BodyLimit>>().map_or_else(BodyLimit::default, |l| *l.get_ref());
    let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"));
    let declared_length =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
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
        let deadline = tokio::time::Instant::now() + time;
        while let Some(chunk) =
            tokio::time::timeout_at(deadline, payload.next()).await.map_err(|_| ApiError::request_timeout())?
        {
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
        if empty_is_object && json_declared.is_none() && body.is_empty() {
            return Ok(JsonBody(Map::new()));
        }
        parse_object(&body).map(JsonBody)
    })
}

/// A request body read into `T`, whose `Deserialize` shape is also its
/// OpenAPI schema: the checks of [`JsonBody`] first, then every field's
/// problem at once (see [`from_object`]), then the body's own [`BodyRules`].
#[derive(Debug)]
pub struct Body<T>(pub T);

/// Rules across a body's fields, found along with the fields' own problems.
pub trait BodyRules {
    /// Whether a request may send no body at all (read as `{}`): for bodies
    /// whose every field is optional and that a browser may well omit.
    const MAY_BE_ABSENT: bool = false;

    fn check(&self, _errors: &mut FieldErrors) {}
}

impl<T: DeserializeOwned + BodyRules + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = read_object(req, payload, T::MAY_BE_ABSENT);
        Box::pin(async move { from_object(object.await?.0).map(Body).map_err(ApiError::validation) })
    }
}

/// A query string read into `T` as a body is (every field a string; a key
/// given twice keeps its last value).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + BodyRules> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|_| ApiError::validation(FieldErrors::single(NON_FIELD_ERRORS, "The query string is malformed.")));
        std::future::ready(pairs.and_then(|pairs| {
            let object = pairs.into_inner().into_iter().map(|(key, value)| (key, Value::String(value))).collect();
            from_object(object).map(Query).map_err(ApiError::validation)
        }))
    }
}

/// A typed body read from a JSON object, with every field's problem collected
/// in the contract's words (`This field is required.`, dotted keys for nested
/// fields) instead of serde's first error. Unknown fields are ignored.
pub fn from_object<T: DeserializeOwned + BodyRules>(map: Map<String, Value>) -> Result<T, FieldErrors> {
    let errors = RefCell::new(FieldErrors::new());
    let value = T::deserialize(Object { map, prefix: String::new(), errors: &errors, quiet: false });
    let mut errors = errors.into_inner();
    match value {
        Ok(value) => {
            value.check(&mut errors);
            errors.finish(value)
        }
        // Only a body type the reader does not support gets here.
        Err(error) => Err(FieldErrors::single(NON_FIELD_ERRORS, error.0)),
    }
}

/// The reader's own error: a body type it does not support.
#[derive(Debug)]
pub struct Unsupported(String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        Unsupported(message.to_string())
    }
}

/// An object whose declared fields are read one by one. `quiet` reads
/// defaults without reporting: the object itself was the wrong kind, and that
/// is reported once, on its own key.
struct Object<'e> {
    map: Map<String, Value>,
    prefix: String,
    errors: &'e RefCell<FieldErrors>,
    quiet: bool,
}

impl<'de, 'e> de::Deserializer<'de> for Object<'e> {
    type Error = Unsupported;

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        let fields = fields.iter().map(|&name| (name, self.map.remove(name))).collect::<Vec<_>>().into_iter();
        visitor.visit_map(Declared {
            fields,
            current: None,
            prefix: self.prefix,
            errors: self.errors,
            quiet: self.quiet,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Unsupported> {
        Err(Unsupported("a request body is read into a struct".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Every declared field, present or not: a missing one is the field's problem to report.
struct Declared<'e, I> {
    fields: I,
    current: Option<(&'static str, Option<Value>)>,
    prefix: String,
    errors: &'e RefCell<FieldErrors>,
    quiet: bool,
}

impl<'de, 'e, I: Iterator<Item = (&'static str, Option<Value>)>> MapAccess<'de> for Declared<'e, I> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Unsupported> {
        let Some((name, value)) = self.fields.next() else { return Ok(None) };
        self.current = Some((name, value));
        seed.deserialize(de::value::BorrowedStrDeserializer::new(name)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Unsupported> {
        let (name, value) = self.current.take().ok_or_else(|| Unsupported("a value before its key".into()))?;
        let key = format!("{}{name}", self.prefix);
        seed.deserialize(Field { key, value, errors: self.errors, quiet: self.quiet, optional: false })
    }
}

/// One field's value (`None` when absent). A value of the wrong kind is
/// reported under the field's key and read as its type's empty value, so
/// reading goes on and every field's problem is found.
struct Field<'e> {
    key: String,
    value: Option<Value>,
    errors: &'e RefCell<FieldErrors>,
    quiet: bool,
    /// Inside an `Option`: absent is fine, and a blank string is kept.
    optional: bool,
}

const REQUIRED: &str = "This field is required.";
const NOT_NULL: &str = "This field may not be null.";
const BLANK: &str = "This field may not be blank.";
const NOT_STRING: &str = "Not a valid string.";
const NOT_BOOLEAN: &str = "Must be a valid boolean.";
const NOT_LIST: &str = "Expected a list of names.";
const NOT_OBJECT: &str = "Expected an object.";

impl Field<'_> {
    fn fail(&self, message: &str) {
        if !self.quiet {
            self.errors.borrow_mut().add(&self.key, message);
        }
    }

    /// The value, or the reason it is missing reported.
    fn present(&mut self) -> Option<Value> {
        match self.value.take() {
            None => self.fail(REQUIRED),
            Some(Value::Null) => self.fail(NOT_NULL),
            Some(value) => return Some(value),
        }
        None
    }
}

impl<'de> de::Deserializer<'de> for Field<'_> {
    type Error = Unsupported;

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.value {
            None => visitor.visit_none(),
            // `Option<Option<T>>` reads null as `Some(None)`; a plain `Option<T>` refuses it.
            Some(Value::Null) if self.optional => visitor.visit_none(),
            Some(_) => visitor.visit_some(Field { optional: true, ..self }),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        let text = match self.present() {
            Some(Value::String(text)) if !self.optional && text.trim().is_empty() => {
                self.fail(BLANK);
                text
            }
            Some(Value::String(text)) => text,
            Some(_) => {
                self.fail(NOT_STRING);
                String::new()
            }
            None => String::new(),
        };
        visitor.visit_string(text)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        let flag = match self.present() {
            Some(Value::Bool(flag)) => flag,
            Some(_) => {
                self.fail(NOT_BOOLEAN);
                false
            }
            None => false,
        };
        visitor.visit_bool(flag)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        let names = match self.present() {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items,
            Some(_) => {
                self.fail(NOT_LIST);
                Vec::new()
            }
            None => Vec::new(),
        };
        let names = names.into_iter().filter_map(|item| match item {
            Value::String(name) => Some(de::value::StringDeserializer::<Unsupported>::new(name)),
            _ => None,
        });
        visitor.visit_seq(de::value::SeqDeserializer::new(names))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        let (map, quiet) = match self.present() {
            Some(Value::Object(map)) => (map, self.quiet),
            Some(_) => {
                self.fail(NOT_OBJECT);
                (Map::new(), true)
            }
            None => (Map::new(), true),
        };
        let prefix = format!("{}.", self.key);
        Object { map, prefix, errors: self.errors, quiet }.deserialize_struct(name, fields, visitor)
    }

    /// A choice among an enum's unit variants, by name.
    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        let first = variants.first().copied().unwrap_or_default();
        let choice = match self.present() {
            Some(Value::String(text)) if variants.contains(&text.as_str()) => text,
            Some(_) => {
                self.fail(&format!("Must be one of: {}.", variants.join(", ")));
                first.to_owned()
            }
            None => first.to_owned(),
        };
        visitor.visit_enum(de::value::StringDeserializer::<Unsupported>::new(choice))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Unsupported> {
        Err(Unsupported(format!("`{}` has a type request bodies do not use", self.key)))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct map identifier ignored_any
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

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        a: String,
        b: String,
        c: String,
        d: String,
        missing: String,
        e: Option<bool>,
        spaced: Option<String>,
        list: Option<Vec<String>>,
        p: Option<Nested>,
        q: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Nested {
        phone: Option<Option<String>>,
        bio: Option<String>,
    }

    impl BodyRules for Sample {}
    impl BodyRules for Nested {}

    fn read(json: &[u8]) -> Result<Sample, FieldErrors> {
        from_object(parse_object(json).unwrap())
    }

    #[test]
    fn every_field_error_is_collected_in_the_contracts_words() {
        let body = br#"{"a": null, "b": 3, "c": "  ", "d": "x", "e": "yes", "spaced": " ", "list": [1],
                        "p": {"phone": 5, "bio": null}, "q": 7, "unknown": {"ignored": true}}"#;
        let errors = read(body).unwrap_err();
        let expected = [
            ("a", "This field may not be null."),
            ("b", "Not a valid string."),
            ("c", "This field may not be blank."),
            ("missing", "This field is required."),
            ("e", "Must be a valid boolean."),
            ("list", "Expected a list of names."),
            ("p.phone", "Not a valid string."),
            ("p.bio", "This field may not be null."),
            ("q", "Expected an object."),
        ];
        let mut wanted = FieldErrors::new();
        for (field, message) in expected {
            wanted.add(field, message);
        }
        assert_eq!(errors, wanted, "and nothing for d, spaced (optional, kept as sent) or unknown fields");
    }

    #[test]
    fn a_good_body_is_read_whole() {
        let body = br#"{"a": "1", "b": "2", "c": "3", "d": "4", "missing": "5", "e": true, "spaced": " ",
                        "list": ["x", "y"], "p": {"phone": null}}"#;
        let sample = read(body).unwrap();
        let texts = [&sample.a, &sample.b, &sample.c, &sample.d, &sample.missing].map(String::as_str);
        assert_eq!(texts, ["1", "2", "3", "4", "5"]);
        assert_eq!((sample.e, sample.spaced.as_deref()), (Some(true), Some(" ")));
        assert_eq!(sample.list, Some(vec!["x".to_owned(), "y".to_owned()]));
        let nested = sample.p.unwrap();
        assert_eq!((nested.phone, nested.bio), (Some(None), None), "null clears, absent leaves alone");
        assert!(sample.q.is_none());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const FIELDS: [&str; 14] =
            ["a", "b", "c", "d", "missing", "e", "spaced", "list", "p", "q", "p.phone", "p.bio", "q.phone", "q.bio"];

        /// Any JSON value, nested a little, with keys that are the sample's own
        /// about half of the time.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(key(), inner, 0..8)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![proptest::sample::select(&FIELDS[..10]).prop_map(str::to_owned), "\\PC{0,6}"]
        }

        proptest! {
            /// Any bytes get an answer: an object, or `invalid_json`.
            #[test]
            fn any_bytes_are_an_object_or_invalid_json(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                match parse_object(&bytes) {
                    Ok(map) => prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).ok(), Some(Value::Object(map))),
                    Err(error) => prop_assert_eq!(error.code(), "invalid_json"),
                }
            }

            /// Any object is read whole or refused with errors under the
            /// body's own keys only, whatever kinds its values are.
            #[test]
            fn any_object_is_read_or_refused_under_its_own_keys(
                object in proptest::collection::btree_map(key(), json(), 0..12)
            ) {
                let text = serde_json::to_vec(&object).unwrap();
                let map = parse_object(&text).unwrap();
                if let Err(errors) = from_object::<Sample>(map) {
                    prop_assert!(!errors.is_empty());
                    for (field, _) in errors.iter() {
                        prop_assert!(FIELDS.contains(&field), "{field}");
                    }
                }
            }
        }
    }
}
