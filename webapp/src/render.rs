//! Stored documents written as JSON the way the old app's `jsonify` wrote them:
//! compact, keys sorted, non-ASCII escaped, `_id` left out.
//!
//! The JSON is written straight from the BSON bytes. The bson crate's iterator checks and
//! converts every value it passes, which took half of the writing's time; here each element
//! is sliced once, with every length checked against what holds it, and only the types a
//! JSON body cannot create are handed to the crate.

use std::io::Write as _;

use mongodb::bson::raw::RawDocument;
use mongodb::bson::spec::ElementType;
use mongodb::bson::{Bson, Decimal128};

use crate::Error;

/// Appends `document` as a JSON object without its top-level `_id`.
pub fn write_document(out: &mut Vec<u8>, document: &RawDocument) -> Result<(), Error> {
    write_object(out, document.as_bytes(), Some(b"_id"))
}

fn write_object(out: &mut Vec<u8>, document: &[u8], skip: Option<&[u8]>) -> Result<(), Error> {
    let mut fields = Vec::new();
    for element in Elements::of(document)? {
        let element = element?;
        if Some(element.key) != skip {
            fields.push(element);
        }
    }
    // Byte order of UTF-8 is code point order, which is how Python sorts keys.
    fields.sort_unstable_by(|a, b| a.key.cmp(b.key));
    out.push(b'{');
    for (index, element) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, element.key)?;
        out.push(b':');
        write_value(out, element)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, element: &Element<'_>) -> Result<(), Error> {
    let value = element.value;
    // Writes into a Vec cannot fail, so the io::Results below are ignored.
    match element.kind {
        ElementType::Null => out.extend_from_slice(b"null"),
        ElementType::Boolean => match value {
            [0] => out.extend_from_slice(b"false"),
            [1] => out.extend_from_slice(b"true"),
            _ => return Err(corrupt("a boolean is neither 0 nor 1")),
        },
        // serde_json writes numbers without the formatting machinery of `write!`.
        ElementType::Int32 => {
            _ = serde_json::to_writer(&mut *out, &i32::from_le_bytes(fixed(value)?))
        }
        ElementType::Int64 => {
            _ = serde_json::to_writer(&mut *out, &i64::from_le_bytes(fixed(value)?))
        }
        ElementType::Double => {
            let double = f64::from_le_bytes(fixed(value)?);
            if double.is_finite() {
                _ = serde_json::to_writer(&mut *out, &double);
            } else {
                write_extended_json(out, element)?;
            }
        }
        ElementType::String => write_string(out, text(value)?)?,
        ElementType::EmbeddedDocument => write_object(out, value, None)?,
        ElementType::Array => {
            out.push(b'[');
            for (index, item) in Elements::of(value)?.enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, &item?)?;
            }
            out.push(b']');
        }
        // The bson crate's extended JSON panics on Decimal128, so it is spelled out here.
        ElementType::Decimal128 => {
            out.extend_from_slice(br#"{"$numberDecimal":"#);
            write_string(
                out,
                Decimal128::from_bytes(fixed(value)?).to_string().as_bytes(),
            )?;
            out.push(b'}');
        }
        _ => write_extended_json(out, element)?,
    }
    Ok(())
}

/// Types a JSON body cannot create (stored by other clients) as relaxed extended JSON. These
/// are rare, so the bson crate reads them, from a document of this element alone.
fn write_extended_json(out: &mut Vec<u8>, element: &Element<'_>) -> Result<(), Error> {
    // Its length, the type, an empty key, the value and the document's closing 0.
    let length = 4 + 2 + element.value.len() + 1;
    let mut alone = Vec::with_capacity(length);
    let length = i32::try_from(length).map_err(|_| corrupt("a value is over 2 GiB"))?;
    alone.extend_from_slice(&length.to_le_bytes());
    alone.extend_from_slice(&[element.kind as u8, 0]);
    alone.extend_from_slice(element.value);
    alone.push(0);
    let value = RawDocument::from_bytes(&alone)?
        .get("")?
        .ok_or_else(|| corrupt("a value read alone was lost"))?;
    let json = Bson::try_from(value)?.into_relaxed_extjson();
    _ = serde_json::to_writer(&mut *out, &json);
    Ok(())
}

/// One field of a BSON document, or one item of an array, sliced from its bytes.
struct Element<'a> {
    /// The field's name (an array item's index), UTF-8 unless corrupt.
    key: &'a [u8],
    /// The value's BSON type.
    kind: ElementType,
    /// The value's bytes, as many as its type and lengths say.
    value: &'a [u8],
}

/// The elements of a BSON document's bytes, in stored order. The first malformed element
/// ends them with its error.
struct Elements<'a> {
    /// The elements not read yet, without the document's closing 0.
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    /// Checks the document's own length and closing 0 before any element is read.
    fn of(document: &'a [u8]) -> Result<Self, Error> {
        let (length, elements) = length_and_rest(document)?;
        match elements.split_last() {
            Some((0, rest)) if length == document.len() => Ok(Self { rest }),
            _ => Err(corrupt("a document's length or closing 0 is wrong")),
        }
    }

    /// The element whose type is `tag`, from the bytes after it.
    fn read(&mut self, tag: u8, after_tag: &'a [u8]) -> Result<Element<'a>, Error> {
        let kind = ElementType::from(tag)
            .ok_or_else(|| corrupt(format!("unknown BSON type {tag:#04x}")))?;
        let (key, after_key) = c_string(after_tag)?;
        let size = match kind {
            ElementType::Null
            | ElementType::Undefined
            | ElementType::MinKey
            | ElementType::MaxKey => 0,
            ElementType::Boolean => 1,
            ElementType::Int32 => 4,
            ElementType::Double
            | ElementType::Int64
            | ElementType::DateTime
            | ElementType::Timestamp => 8,
            ElementType::ObjectId => 12,
            ElementType::Decimal128 => 16,
            // A length, then as many bytes (a string's with its closing 0).
            ElementType::String | ElementType::JavaScriptCode | ElementType::Symbol => {
                4 + length_and_rest(after_key)?.0
            }
            ElementType::Binary => 4 + 1 + length_and_rest(after_key)?.0,
            ElementType::DbPointer => 4 + length_and_rest(after_key)?.0 + 12,
            // A length that counts its own 4 bytes.
            ElementType::EmbeddedDocument
            | ElementType::Array
            | ElementType::JavaScriptCodeWithScope => length_and_rest(after_key)?.0,
            ElementType::RegularExpression => {
                let (pattern, after_pattern) = c_string(after_key)?;
                let (options, _) = c_string(after_pattern)?;
                pattern.len() + 1 + options.len() + 1
            }
        };
        if size > after_key.len() {
            let key = String::from_utf8_lossy(key);
            return Err(corrupt(format!(
                "the value of {key:?} runs past its document"
            )));
        }
        let (value, rest) = after_key.split_at(size);
        self.rest = rest;
        Ok(Element { key, kind, value })
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Element<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, after_tag) = self.rest.split_first()?;
        let element = self.read(tag, after_tag);
        if element.is_err() {
            self.rest = &[];
        }
        Some(element)
    }
}

/// A little-endian length of 4 bytes, not negative, and the bytes after it.
fn length_and_rest(bytes: &[u8]) -> Result<(usize, &[u8]), Error> {
    let (length, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("a length runs past its document"))?;
    let length = usize::try_from(i32::from_le_bytes(*length))
        .map_err(|_| corrupt("a length is negative"))?;
    Ok((length, rest))
}

/// The bytes before the first 0, and those after it.
fn c_string(bytes: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .ok_or_else(|| corrupt("a name has no closing 0"))?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

/// A string value's text, UTF-8 unless corrupt: its length, then the text and a closing 0.
fn text(value: &[u8]) -> Result<&[u8], Error> {
    match value.get(4..).and_then(<[u8]>::split_last) {
        Some((0, text)) => Ok(text),
        _ => Err(corrupt("a string has no closing 0")),
    }
}

/// The value's bytes as an array of its type's size, which the element's type fixed.
fn fixed<const N: usize>(value: &[u8]) -> Result<[u8; N], Error> {
    value
        .try_into()
        .map_err(|_| corrupt(format!("a value of {N} bytes has {}", value.len())))
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::CorruptDocument(reason.into())
}

/// A JSON string with every non-ASCII or control character as `\uXXXX`, as Python's
/// `json.dumps` writes it by default. Runs of characters that need no escape go out in one
/// copy: most text is such a run. Only the characters past ASCII are checked as UTF-8, one at
/// a time as they are escaped: most text has none.
fn write_string(out: &mut Vec<u8>, text: &[u8]) -> Result<(), Error> {
    out.push(b'"');
    let mut rest = text;
    loop {
        let plain = rest
            .iter()
            .position(|&b| !matches!(b, b' '..=b'~') || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        let (run, after) = rest.split_at(plain);
        out.extend_from_slice(run);
        if after.is_empty() {
            break;
        }
        // A character takes at most 4 bytes: the check stops there, not at the text's end.
        let c = after[..after.len().min(4)]
            .utf8_chunks()
            .next()
            .and_then(|chunk| chunk.valid().chars().next())
            .ok_or_else(|| corrupt("a string or key is not UTF-8"))?;
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
        rest = &after[c.len_utf8()..];
    }
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use mongodb::bson::spec::BinarySubtype;
    use mongodb::bson::{
        Binary, DateTime, Decimal128, JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp,
        doc, oid::ObjectId,
    };
    use proptest::prelude::*;

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

    #[test]
    fn reads_each_type_to_its_end_and_the_next_field_after_it() {
        let values = [
            Bson::RegularExpression(Regex {
                pattern: "^a.c$".to_owned(),
                options: "im".to_owned(),
            }),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![0, 1, 2],
            }),
            Bson::DateTime(DateTime::from_millis(1_700_000_000_000)),
            Bson::Timestamp(Timestamp {
                time: 7,
                increment: 3,
            }),
            Bson::JavaScriptCode("f()".to_owned()),
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "g(x)".to_owned(),
                scope: doc! { "x": 1 },
            }),
            Bson::Symbol("s".to_owned()),
            Bson::Undefined,
            Bson::MinKey,
            Bson::MaxKey,
            Bson::Double(f64::NEG_INFINITY),
        ];
        for value in values {
            let expected = serde_json::to_string(&value.clone().into_relaxed_extjson()).unwrap();
            assert_eq!(
                render(doc! { "v": value, "w": [1, "x"] }),
                format!(r#"{{"v":{expected},"w":[1,"x"]}}"#)
            );
        }
    }

    #[test]
    fn a_value_longer_than_its_document_is_named_not_read() {
        let mut bytes = RawDocumentBuf::from_document(&doc! { "s": "text", "n": 1 })
            .unwrap()
            .into_bytes();
        // The string's length follows the 4 bytes of the document's, its type and "s\0".
        bytes[7] = 100;
        let document = RawDocument::from_bytes(&bytes).unwrap();
        let err = write_document(&mut Vec::new(), document).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"stored document is not valid BSON: the value of "s" runs past its document"#
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_named_not_written() {
        for (key, value) in [("k", "é"), ("é", "v")] {
            let mut bytes = RawDocumentBuf::from_document(&doc! { key: value })
                .unwrap()
                .into_bytes();
            // The second byte of "é" (0xc3 0xa9) made ASCII.
            let at = bytes.iter().position(|&byte| byte == 0xa9).unwrap();
            bytes[at] = b'A';
            let document = RawDocument::from_bytes(&bytes).unwrap();
            let err = write_document(&mut Vec::new(), document).unwrap_err();
            assert_eq!(
                err.to_string(),
                "stored document is not valid BSON: a string or key is not UTF-8"
            );
        }
    }

    proptest! {
        /// Whatever a stored document's bytes hold, its JSON is whole or an error: never a
        /// panic, never half an object.
        #[test]
        fn a_changed_byte_gives_valid_json_or_an_error(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let document = doc! {
                "_id": ObjectId::new(),
                "a": [1_i64, 2.5, "é", null, {"b": true}],
                "c": {"d": Binary { subtype: BinarySubtype::Generic, bytes: vec![9; 5] }},
                "e": Regex { pattern: "x".to_owned(), options: "i".to_owned() },
                "f": Decimal128::from_bytes([1; 16]),
            };
            let mut bytes = RawDocumentBuf::from_document(&document).unwrap().into_bytes();
            // The document's own length and closing 0 are checked before it is handed over.
            let at = 4 + at.index(bytes.len() - 5);
            bytes[at] = byte;
            let mut out = Vec::new();
            if write_document(&mut out, RawDocument::from_bytes(&bytes).unwrap()).is_ok() {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
            }
        }
    }
}
