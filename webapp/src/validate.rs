//! Checks of a POSTed body, done before any database call, and its conversion to BSON.
//!
//! The body is read in one pass straight into the bytes of the BSON document: no JSON or
//! BSON tree is built, as one would take tens of MB for a 1 MiB body of small values.

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use mongodb::bson::RawDocumentBuf;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::ElementType;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::Error;

/// Deepest accepted nesting of objects and arrays; the top-level object is level 1.
pub const MAX_DEPTH: usize = 32;
/// MongoDB's largest document, in bytes of BSON. The driver refuses a larger one before
/// sending anything, and with it every document of the same insert.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

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

/// Parses a body into the document to store, with `id` as its first field, or says what is
/// wrong with it. Malformed JSON is reported first, then a body that is not an object, then
/// an `_id` field, then the first other problem in document order.
pub fn document_from_body(body: &[u8], id: ObjectId) -> Result<RawDocumentBuf, Error> {
    let mut writer = Writer {
        out: Vec::with_capacity(body.len()),
        path: String::new(),
        members: Vec::new(),
        problem: None,
        id,
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    Value {
        writer: &mut writer,
        element: None,
        depth: 0,
    }
    .deserialize(&mut json)
    .and_then(|()| json.end())
    .map_err(|err| Error::BadRequest(format!("malformed JSON: {err}")))?;
    match writer.problem {
        Some(problem) => Err(Error::BadRequest(problem)),
        None if writer.out.len() > MAX_DOCUMENT_BYTES => Err(Error::DocumentTooLarge {
            bytes: writer.out.len(),
        }),
        None => Ok(RawDocumentBuf::from_bytes(writer.out)?),
    }
}

/// The BSON being written and where the reader is.
struct Writer {
    out: Vec<u8>,
    /// JSON Pointer of the value being read.
    path: String,
    /// Where each member of the open objects starts, innermost object last.
    members: Vec<usize>,
    /// The first problem found: from then on the body is only checked for syntax (and for
    /// `_id`), so that malformed JSON is still reported first.
    problem: Option<String>,
    id: ObjectId,
}

impl Writer {
    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// Starts an element: a type byte, set once the value is read, and the key.
    fn start_element(&mut self, key: impl Display) -> usize {
        let start = self.out.len();
        self.out.push(0);
        // Writes into a Vec cannot fail.
        _ = write!(self.out, "{key}\0");
        start
    }

    fn set_type(&mut self, element: usize, kind: ElementType) {
        self.out[element] = kind as u8;
    }

    /// Starts a document or array: its length, set by [`Writer::close_document`].
    fn open_document(&mut self) -> usize {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        start
    }

    fn close_document(&mut self, start: usize) {
        self.out.push(0);
        // Far below 2 GiB: documents are made from bodies of at most BODY_LIMIT_BYTES.
        let length = (self.out.len() - start) as i32;
        self.out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    }

    /// Checks the nesting level of an object or array that starts here.
    fn enter(&mut self, level: usize) -> bool {
        if level > MAX_DEPTH {
            self.fail(format!(
                "nesting deeper than {MAX_DEPTH} levels at {}",
                self.path
            ));
        }
        !self.failed()
    }

    /// Keeps only the last of the members with the same key among `members[first..]` (those
    /// of the object being closed), as JSON parsers and the old app do.
    fn drop_repeated_keys(&mut self, first: usize) {
        let starts = &self.members[first..];
        if starts.len() < 2 {
            return;
        }
        let out = &self.out;
        let key = |index: usize| {
            let key = &out[starts[index] + 1..];
            &key[..key.iter().position(|&b| b == 0).unwrap_or(key.len())]
        };
        let mut order: Vec<usize> = (0..starts.len()).collect();
        // Stable: of equal keys, the later member sorts later.
        order.sort_by(|&a, &b| key(a).cmp(key(b)));
        let mut dropped = vec![false; starts.len()];
        for pair in order.windows(2) {
            dropped[pair[0]] = key(pair[0]) == key(pair[1]);
        }
        if !dropped.contains(&true) {
            return;
        }
        let mut kept_end = starts[0];
        for (index, &start) in starts.iter().enumerate() {
            let end = starts.get(index + 1).copied().unwrap_or(self.out.len());
            if !dropped[index] {
                self.out.copy_within(start..end, kept_end);
                kept_end += end - start;
            }
        }
        self.out.truncate(kept_end);
    }
}

/// A JSON value read into the writer: the body itself when `element` is `None` (it must
/// be an object), else the value of the element that starts at `element`.
struct Value<'w> {
    writer: &'w mut Writer,
    element: Option<usize>,
    /// Nesting level of the object or array that holds the value; 0 for the body.
    depth: usize,
}

impl Value<'_> {
    /// Writes a scalar of type `kind` from `parts`; `name` says what it is if it is the body.
    fn scalar(self, name: &str, kind: ElementType, parts: &[&[u8]]) {
        let Some(element) = self.element else {
            not_an_object(self.writer, name);
            return;
        };
        self.writer.set_type(element, kind);
        for part in parts {
            self.writer.out.extend_from_slice(part);
        }
    }
}

fn not_an_object(writer: &mut Writer, name: &str) {
    writer.fail(format!("the body must be a JSON object, not {name}"));
}

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.writer.failed() {
            deserializer.deserialize_any(Skip)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar("null", ElementType::Null, &[]);
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.scalar("a boolean", ElementType::Boolean, &[&[u8::from(b)]]);
        Ok(())
    }

    // Like pymongo: an integer that fits 32 bits is stored as int32, else int64.
    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        match i32::try_from(i) {
            Ok(i) => self.scalar("a number", ElementType::Int32, &[&i.to_le_bytes()]),
            Err(_) => self.scalar("a number", ElementType::Int64, &[&i.to_le_bytes()]),
        }
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<(), E> {
        match i64::try_from(u) {
            Ok(i) => return self.visit_i64(i),
            Err(_) if self.element.is_none() => not_an_object(self.writer, "a number"),
            Err(_) => {
                let problem = format!("integer out of the 64-bit range at {}", self.writer.path);
                self.writer.fail(problem);
            }
        }
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        self.scalar("a number", ElementType::Double, &[&f.to_le_bytes()]);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        // Far below 2 GiB: the string is part of the body.
        let length = (s.len() + 1) as i32;
        let parts: [&[u8]; 3] = [&length.to_le_bytes(), s.as_bytes(), &[0]];
        self.scalar("a string", ElementType::String, &parts);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let writer = self.writer;
        let level = self.depth + 1;
        let Some(element) = self.element else {
            not_an_object(writer, "an array");
            return Skip.visit_seq(seq);
        };
        if !writer.enter(level) {
            return Skip.visit_seq(seq);
        }
        writer.set_type(element, ElementType::Array);
        let start = writer.open_document();
        let parent = writer.path.len();
        for index in 0_usize.. {
            if writer.failed() {
                return Skip.visit_seq(seq);
            }
            _ = write!(writer.path, "/{index}");
            let element = writer.start_element(index);
            let value = Value {
                writer: &mut *writer,
                element: Some(element),
                depth: level,
            };
            let more = seq.next_element_seed(value)?.is_some();
            writer.path.truncate(parent);
            if !more {
                writer.out.truncate(element);
                break;
            }
        }
        writer.close_document(start);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let writer = self.writer;
        let level = self.depth + 1;
        if let Some(element) = self.element {
            if !writer.enter(level) {
                return Skip.visit_map(map);
            }
            writer.set_type(element, ElementType::EmbeddedDocument);
        }
        let start = writer.open_document();
        if self.element.is_none() {
            // The server assigns `_id`: it orders documents and pages through them.
            let id = writer.start_element("_id");
            writer.set_type(id, ElementType::ObjectId);
            let bytes = writer.id.bytes();
            writer.out.extend_from_slice(&bytes);
        }
        let first = writer.members.len();
        let parent = writer.path.len();
        while let Some(element) = map.next_key_seed(Key {
            writer: &mut *writer,
            top_level: level == 1,
        })? {
            match element {
                Some(element) => {
                    writer.members.push(element);
                    map.next_value_seed(Value {
                        writer: &mut *writer,
                        element: Some(element),
                        depth: level,
                    })?;
                }
                None => map.next_value_seed(Skip)?,
            }
            writer.path.truncate(parent);
        }
        if !writer.failed() {
            writer.drop_repeated_keys(first);
            writer.close_document(start);
        }
        writer.members.truncate(first);
        Ok(())
    }
}

/// An object's key: checked, then started as an element unless the body has a problem.
struct Key<'w> {
    writer: &'w mut Writer,
    top_level: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    /// Where the member's element starts, or `None` when its value is to be skipped.
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let writer = self.writer;
        if self.top_level && key == "_id" {
            // Reported before any other problem, whatever its place in the body.
            writer.problem = Some("the \"_id\" field is assigned by the server".to_owned());
        }
        if writer.failed() {
            return Ok(None);
        }
        push_pointer_token(&mut writer.path, key);
        if let Err(problem) = check_key(key, &writer.path, self.top_level) {
            writer.fail(problem);
            return Ok(None);
        }
        Ok(Some(writer.start_element(key)))
    }
}

/// A value read and dropped, parsed as strictly as a kept one, so that a body with a problem
/// is still reported as malformed JSON when it is.
#[derive(Clone, Copy)]
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// Keys that MongoDB would read as operators or paths are refused, so a body cannot
/// inject a query operator or write to a nested field it does not spell out.
fn check_key(key: &str, path: &str, top_level: bool) -> Result<(), String> {
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
    Err(format!(
        "invalid key at {path}: a key that {problem} is not allowed"
    ))
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
    use mongodb::bson::{Bson, doc};
    use proptest::prelude::*;
    use serde_json::Value as Json;

    use super::*;

    fn convert(body: &str) -> Result<RawDocumentBuf, Error> {
        document_from_body(body.as_bytes(), ObjectId::new())
    }

    fn message(body: &str) -> String {
        match convert(body) {
            Err(Error::BadRequest(message)) => message,
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn writes_the_document_with_the_id_first() {
        let id = ObjectId::new();
        let body = r#"{"s": "a\u0000é", "": [1, -2.5, null, true, {"k": []}], "o": {"n": {}}}"#;
        let document = document_from_body(body.as_bytes(), id).unwrap();
        let document = document.to_document().unwrap();
        assert_eq!(
            document,
            doc! {
                "_id": id, "s": "a\u{0}é", "": [1, -2.5, null, true, {"k": []}], "o": {"n": {}},
            }
        );
        assert_eq!(document.keys().next().map(String::as_str), Some("_id"));
    }

    #[test]
    fn a_document_over_mongodbs_limit_is_refused_with_its_size() {
        // The id's element and the document's own bytes around a string member `s`.
        const AROUND_THE_STRING: usize = 30;
        let body = |length: usize| format!(r#"{{"s":"{}"}}"#, "x".repeat(length));
        let largest = convert(&body(MAX_DOCUMENT_BYTES - AROUND_THE_STRING)).unwrap();
        assert_eq!(largest.as_bytes().len(), MAX_DOCUMENT_BYTES);
        let over = convert(&body(MAX_DOCUMENT_BYTES - AROUND_THE_STRING + 1)).unwrap_err();
        assert_eq!(
            over.to_string(),
            "the document is 16777217 bytes as BSON, over MongoDB's limit of 16777216 bytes"
        );
        assert_eq!(over.status(), 413);
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Json::from),
            any::<String>().prop_map(Json::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map("[a-z_]{0,3}", inner, 0..4)
                    .prop_map(|map| Json::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_valid_body_comes_back_as_posted(
            fields in prop::collection::btree_map(
                "[a-z_]{0,3}".prop_filter("the server assigns _id", |key| key != "_id"),
                json(),
                0..6,
            )
        ) {
            let body = Json::Object(fields.into_iter().collect());
            let document =
                document_from_body(&serde_json::to_vec(&body).unwrap(), ObjectId::new()).unwrap();
            let mut rendered = Vec::new();
            crate::render::write_document(&mut rendered, &document).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Json>(&rendered).unwrap(), body);
        }
    }

    #[test]
    fn keeps_the_last_of_repeated_keys() {
        let document = convert(r#"{"a": 1, "b": {"x": 1, "y": 2, "x": [3]}, "a": {"c": 4}}"#)
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(document.get("a"), Some(&Bson::Document(doc! { "c": 4 })));
        assert_eq!(
            document.get("b"),
            Some(&Bson::Document(doc! { "y": 2, "x": [3] }))
        );
        assert_eq!(document.len(), 3);
    }

    #[test]
    fn reports_malformed_json_then_a_non_object_then_id_then_the_first_problem() {
        assert!(message(r#"{"$a": 1, "b": "#).starts_with("malformed JSON"));
        assert!(message(r#"[{"$a": 1}] x"#).starts_with("malformed JSON"));
        assert_eq!(
            message(r#"[{"$a": 1}]"#),
            "the body must be a JSON object, not an array"
        );
        assert_eq!(
            message(r#"{"$a": 1, "_id": 2}"#),
            r#"the "_id" field is assigned by the server"#
        );
        assert!(message(r#"{"b": [{"x.y": 1}], "$a": 1}"#).starts_with("invalid key at /b/0/x.y"));
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
            assert!(convert(&nested).is_ok(), "{nested}");
        }
    }

    #[test]
    fn bounds_nesting() {
        let nested =
            |levels: usize| format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        assert!(convert(&nested(MAX_DEPTH)).is_ok());
        assert!(message(&nested(MAX_DEPTH + 1)).starts_with("nesting deeper than 32 levels"));
        let arrays = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(message(&arrays).starts_with("nesting deeper than 32 levels"));
        // Past serde_json's own limit the body is malformed, as before.
        assert!(message(&nested(200)).starts_with("malformed JSON"));
    }

    #[test]
    fn keeps_number_types() {
        let document = convert(r#"{"small": 7, "big": 5000000000, "float": 1.0, "neg": -2}"#)
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(document.get("small"), Some(&Bson::Int32(7)));
        assert_eq!(document.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(document.get("float"), Some(&Bson::Double(1.0)));
        assert_eq!(document.get("neg"), Some(&Bson::Int32(-2)));
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
