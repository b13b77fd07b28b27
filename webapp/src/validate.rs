//! Checks of a POSTed body, done before any database call, and its conversion to BSON.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use mongodb::bson::{Bson, Document};
use serde_json::{Map, Value};

use crate::error::Error;

/// Deepest accepted nesting of objects and arrays; the top-level object is level 1.
pub const MAX_DEPTH: usize = 32;

/// Whether the request declares a JSON body: `application/json` or `application/*+json`,
/// the types the old app's `request.get_json()` accepted.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Parses a body into the document to store, or says what is wrong with it.
pub fn document_from_body(body: &[u8]) -> Result<Document, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| Error::BadRequest(format!("malformed JSON: {err}")))?;
    let Value::Object(object) = value else {
        return Err(Error::BadRequest(format!(
            "the body must be a JSON object, not {}",
            kind(&value)
        )));
    };
    // The server assigns `_id`: it orders documents and pages through them.
    if object.contains_key("_id") {
        return Err(Error::BadRequest(
            "the \"_id\" field is assigned by the server".to_owned(),
        ));
    }
    let mut path = String::new();
    object_to_document(object, &mut path, 1)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `path` is the JSON Pointer of `object`; it is restored before returning.
fn object_to_document(
    object: Map<String, Value>,
    path: &mut String,
    depth: usize,
) -> Result<Document, Error> {
    let mut document = Document::new();
    for (key, value) in object {
        let parent_len = path.len();
        push_pointer_token(path, &key);
        check_key(&key, path, depth == 1)?;
        let value = value_to_bson(value, path, depth)?;
        path.truncate(parent_len);
        document.insert(key, value);
    }
    Ok(document)
}

fn value_to_bson(value: Value, path: &mut String, depth: usize) -> Result<Bson, Error> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(b),
        Value::String(s) => Bson::String(s),
        // Like pymongo: an integer that fits 32 bits is stored as int32, else int64.
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            (None, Some(f)) if n.is_f64() => Bson::Double(f),
            _ => {
                return Err(Error::BadRequest(format!(
                    "integer out of the 64-bit range at {path}"
                )));
            }
        },
        Value::Array(items) => {
            check_depth(depth + 1, path)?;
            let mut array = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let parent_len = path.len();
                let _ = write!(path, "/{index}");
                array.push(value_to_bson(item, path, depth + 1)?);
                path.truncate(parent_len);
            }
            Bson::Array(array)
        }
        Value::Object(object) => {
            check_depth(depth + 1, path)?;
            Bson::Document(object_to_document(object, path, depth + 1)?)
        }
    })
}

fn check_depth(depth: usize, path: &str) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::BadRequest(format!(
            "nesting deeper than {MAX_DEPTH} levels at {path}"
        )));
    }
    Ok(())
}

/// Keys that MongoDB would read as operators or paths are refused, so a body cannot
/// inject a query operator or write to a nested field it does not spell out.
fn check_key(key: &str, path: &str, top_level: bool) -> Result<(), Error> {
    let problem = if key.starts_with('$') {
        "starts with \"$\""
    } else if key.contains('.') {
        "contains \".\""
    } else if key.contains('\0') {
        "contains a NUL character"
    } else if top_level && key.contains(|c| matches!(c, '\0'..='\u{1f}' | '"' | '\\')) {
        // FerretDB's SQLite backend fails on such top-level keys, or stores them in a way
        // that makes every later read of the collection fail.
        "contains a control character, a quote or a backslash"
    } else {
        return Ok(());
    };
    Err(Error::BadRequest(format!(
        "invalid key at {path}: a key that {problem} is not allowed"
    )))
}

/// Appends `/token` with the escapes of RFC 6901.
fn push_pointer_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            '\0' => path.push_str("\\u0000"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> String {
        match document_from_body(body.as_bytes()) {
            Err(Error::BadRequest(message)) => message,
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn names_the_offending_key_path() {
        assert_eq!(
            message(r#"{"a": [1, {"b~/c": {"$gt": 1}}]}"#),
            r#"invalid key at /a/1/b~0~1c/$gt: a key that starts with "$" is not allowed"#
        );
        assert_eq!(
            message(r#"{"x.y": 1}"#),
            r#"invalid key at /x.y: a key that contains "." is not allowed"#
        );
        assert_eq!(
            message(r#"{"ok": {"a\u0000b": 1}}"#),
            r#"invalid key at /ok/a\u0000b: a key that contains a NUL character is not allowed"#
        );
    }

    #[test]
    fn refuses_top_level_keys_the_storage_cannot_read_back() {
        for key in ["a\\tb", "a\\nb", "a\\u001fb", "a\\\"b", "a\\\\b"] {
            let body = format!(r#"{{"{key}": 1}}"#);
            assert!(
                message(&body).contains("a control character, a quote or a backslash"),
                "{body}"
            );
            let nested = format!(r#"{{"x": {{"{key}": 1}}}}"#);
            assert!(document_from_body(nested.as_bytes()).is_ok(), "{nested}");
        }
    }

    #[test]
    fn bounds_nesting() {
        let nested =
            |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        assert!(document_from_body(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(message(&nested(MAX_DEPTH + 1)).starts_with("nesting deeper than 32 levels"));
        let arrays = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(message(&arrays).starts_with("nesting deeper than 32 levels"));
    }

    #[test]
    fn keeps_number_types() {
        let doc =
            document_from_body(br#"{"small": 7, "big": 5000000000, "float": 1.0, "neg": -2}"#)
                .unwrap();
        assert_eq!(doc.get("small"), Some(&Bson::Int32(7)));
        assert_eq!(doc.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(doc.get("float"), Some(&Bson::Double(1.0)));
        assert_eq!(doc.get("neg"), Some(&Bson::Int32(-2)));
        assert!(
            message(r#"{"huge": 18446744073709551615}"#)
                .starts_with("integer out of the 64-bit range")
        );
    }

    #[test]
    fn accepts_json_media_types_only() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type(&HeaderMap::new()));
    }
}
