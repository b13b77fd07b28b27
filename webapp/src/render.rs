//! Stored documents written as JSON the way the old app's `jsonify` wrote them:
//! compact, keys sorted, non-ASCII escaped, `_id` left out.

use std::io::Write as _;

use mongodb::bson::Bson;
use mongodb::bson::raw::{Error as RawError, RawBsonRef, RawDocument};

/// Appends `document` as a JSON object without its top-level `_id`.
pub fn write_document(out: &mut Vec<u8>, document: &RawDocument) -> Result<(), RawError> {
    write_object(out, document, Some("_id"))
}

fn write_object(
    out: &mut Vec<u8>,
    document: &RawDocument,
    skip: Option<&str>,
) -> Result<(), RawError> {
    let mut fields = Vec::new();
    for field in document {
        let (key, value) = field?;
        if Some(key) != skip {
            fields.push((key, value));
        }
    }
    // Byte order of UTF-8 is code point order, which is how Python sorts keys.
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (index, (key, value)) in fields.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, value: RawBsonRef<'_>) -> Result<(), RawError> {
    // Writes into a Vec cannot fail, so the io::Results below are ignored.
    match value {
        RawBsonRef::Null => out.extend_from_slice(b"null"),
        RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        // serde_json writes integers without the formatting machinery of `write!`.
        RawBsonRef::Int32(i) => _ = serde_json::to_writer(&mut *out, &i),
        RawBsonRef::Int64(i) => _ = serde_json::to_writer(&mut *out, &i),
        RawBsonRef::Double(f) if f.is_finite() => _ = serde_json::to_writer(&mut *out, &f),
        RawBsonRef::String(s) => write_string(out, s),
        RawBsonRef::Document(document) => write_object(out, document, None)?,
        RawBsonRef::Array(array) => {
            out.push(b'[');
            for (index, item) in array.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item?)?;
            }
            out.push(b']');
        }
        // The bson crate's extended JSON panics on Decimal128, so it is spelled out here.
        RawBsonRef::Decimal128(decimal) => {
            out.extend_from_slice(br#"{"$numberDecimal":"#);
            write_string(out, &decimal.to_string());
            out.push(b'}');
        }
        // Types a JSON body cannot create (stored by other clients): relaxed extended JSON.
        other => {
            let json = Bson::try_from(other)?.into_relaxed_extjson();
            _ = serde_json::to_writer(&mut *out, &json);
        }
    }
    Ok(())
}

/// A JSON string with every non-ASCII or control character as `\uXXXX`, as Python's
/// `json.dumps` writes it by default. Runs of characters that need no escape go out in one
/// copy: most text is such a run.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut rest = s;
    loop {
        let plain = rest
            .bytes()
            .position(|b| !matches!(b, b' '..=b'~') || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest.as_bytes()[..plain]);
        rest = &rest[plain..];
        let Some(c) = rest.chars().next() else { break };
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Decimal128, RawDocumentBuf, doc, oid::ObjectId};

    use super::*;

    fn render(document: mongodb::bson::Document) -> String {
        let raw = RawDocumentBuf::from_document(&document).unwrap();
        let mut out = Vec::new();
        write_document(&mut out, &raw).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_like_flask_jsonify() {
        let id = ObjectId::new();
        let document = doc! {
            "_id": id, "b": 1, "a": [1.5, 2.0, -0.0, null, true], "c": {"z": "é😀\n\"\u{7f}", "y": 5_000_000_000_i64},
        };
        assert_eq!(
            render(document),
            r#"{"a":[1.5,2.0,-0.0,null,true],"b":1,"c":{"y":5000000000,"z":"\u00e9\ud83d\ude00\n\"\u007f"}}"#
        );
    }

    #[test]
    fn escapes_at_either_end_of_a_plain_run() {
        assert_eq!(
            render(doc! { "s": "\"plain \\ text\u{1}", "": "" }),
            r#"{"":"","s":"\"plain \\ text\u0001"}"#
        );
    }

    #[test]
    fn writes_other_bson_types_as_relaxed_extended_json() {
        let id = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let decimal: Decimal128 = "1.5".parse().unwrap();
        let document = doc! { "ref": id, "price": decimal, "nan": f64::NAN };
        assert_eq!(
            render(document),
            r#"{"nan":{"$numberDouble":"NaN"},"price":{"$numberDecimal":"1.5"},"ref":{"$oid":"65a1b2c3d4e5f60718293a4b"}}"#
        );
    }
}
