//! Server-side apply with the operator's one field manager, and the check that keeps a
//! steady-state reconcile from writing at all.
//!
//! An apply that changes nothing is still a write request, so before applying, the desired
//! object is compared with the cached live one: it is applied only when the spec it comes
//! from changed (a hash in an annotation) or when a value it sets differs in the live
//! object (a hand edit, or a deleted child).

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::labels::MANAGER;

/// Annotation holding the hash of what the operator last applied to a child.
pub const HASH_ANNOTATION: &str = "flaskmongo.dev/applied-hash";

/// A desired child stamped with the hash of its content, and that content as JSON, kept
/// for [`Stamped::is_current`].
pub struct Stamped<K> {
    /// The child with its hash in [`HASH_ANNOTATION`], ready to apply.
    pub object: K,
    /// The child's JSON before stamping.
    content: Value,
}

/// Stamps `desired` with the hash of its content, so a later change of the spec is seen
/// even when it only removes fields.
pub fn stamp<K: Resource + Serialize>(mut desired: K) -> Result<Stamped<K>> {
    let content = to_value(&desired)?;
    desired
        .annotations_mut()
        .insert(HASH_ANNOTATION.to_owned(), content_hash(&content));
    Ok(Stamped {
        object: desired,
        content,
    })
}

/// `desired`, stamped as [`stamp`] does.
pub fn with_hash<K: Resource + Serialize>(desired: K) -> Result<K> {
    Ok(stamp(desired)?.object)
}

impl<K: Resource + Serialize> Stamped<K> {
    /// Whether `live` already is what applying this child would make it: same hash, and
    /// every value the child sets present and equal in `live`.
    pub fn is_current(&self, live: Option<&K>) -> Result<bool> {
        let Some(live) = live else { return Ok(false) };
        if self.object.annotations().get(HASH_ANNOTATION) != live.annotations().get(HASH_ANNOTATION)
        {
            return Ok(false);
        }
        // The content lacks only the hash annotation, which was just found equal.
        Ok(contains(&self.content, &to_value(live)?))
    }
}

/// SHA-256 of `content` as JSON with sorted keys: the same on every build and Rust
/// release, so an upgraded operator re-applies only the children it changes.
fn content_hash(content: &Value) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Hashing(Sha256::new());
    // Writing into a hasher cannot fail.
    let _ = write_canonical(&mut hasher, content);
    hasher
        .0
        .finalize()
        .iter()
        .flat_map(|byte| [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]])
        .map(char::from)
        .collect()
}

/// Feeds what is written to the hash, so the canonical JSON is never held whole.
struct Hashing(Sha256);

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as compact JSON with every object's keys in byte order, written without
/// rebuilding the value (its maps keep insertion order).
fn write_canonical(out: &mut impl std::io::Write, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.write_all(b"{").map_err(serde_json::Error::io)?;
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.write_all(b",").map_err(serde_json::Error::io)?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":").map_err(serde_json::Error::io)?;
                write_canonical(out, item)?;
            }
            out.write_all(b"}").map_err(serde_json::Error::io)
        }
        Value::Array(items) => {
            out.write_all(b"[").map_err(serde_json::Error::io)?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",").map_err(serde_json::Error::io)?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]").map_err(serde_json::Error::io)
        }
        scalar => serde_json::to_writer(out, scalar),
    }
}

fn to_value<K: Serialize>(object: &K) -> Result<Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: std::any::type_name::<K>().to_owned(),
        source,
    })
}

/// Whether every value of `desired` is in `live`; `live` may have more (defaults, status,
/// fields of other managers). List items are compared in order.
pub fn contains(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|live| contains(value, live))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() <= have.len()
                && want
                    .iter()
                    .zip(have)
                    .all(|(value, live)| contains(value, live))
        }
        (Value::String(want), Value::String(have)) => want == have || same_quantity(want, have),
        _ => desired == live,
    }
}

/// The API server rewrites quantities in canonical form (`1024Mi` becomes `1Gi`), so two
/// different strings may be the same amount.
fn same_quantity(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
        _ => false,
    }
}

/// The value of a Kubernetes quantity (`250m`, `1Gi`, `1e3`), or `None` if it is not one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|number| (number, *factor)))
        .or_else(|| text.strip_suffix('P').map(|number| (number, 1e15)))
        .or_else(|| {
            text.strip_suffix('E')
                .filter(|n| !n.is_empty())
                .map(|number| (number, 1e18))
        })
        .unwrap_or((text, 1.0));
    let plain = number.strip_prefix(['+', '-']).unwrap_or(number);
    let digits_only = plain
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if plain.is_empty()
        || !plain.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        || !digits_only
    {
        return None;
    }
    number.parse::<f64>().ok().map(|value| value * factor)
}

/// Applies `desired` with the operator's field manager, taking fields over from others.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    apply_as(api, desired, MANAGER).await
}

/// Applies `desired` with the given field manager, forcing ownership.
pub async fn apply_as<K, P>(api: &Api<K>, desired: &P, manager: &str) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    P: Serialize + std::fmt::Debug,
{
    let name = serde_json::to_value(desired)
        .ok()
        .and_then(|value| value["metadata"]["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|source| Error::kube(format!("apply {kind} {name}"), source))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn live_with_extra_fields_contains_desired() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "cpu": "1000m"}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}], "cpu": "1", "x": 1}});
        assert!(contains(&desired, &live));
        assert!(!contains(&json!({"spec": {"replicas": 3}}), &live));
        assert!(!contains(
            &json!({"spec": {"ports": [{"port": 81}]}}),
            &live
        ));
        assert!(!contains(&json!({"spec": {"missing": true}}), &live));
        assert!(!contains(&json!({"spec": {"ports": [{}, {}]}}), &live));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("2P"), Some(2e15));
        assert_eq!(parse_quantity("mongo"), None);
        assert_eq!(parse_quantity("E"), None);
        assert_eq!(parse_quantity(""), None);
        assert!(same_quantity("1024Mi", "1Gi"));
        assert!(same_quantity("0.5", "500m"));
        assert!(!same_quantity("1Gi", "1G"));
        assert!(!same_quantity("7.0.16", "7.0.16x"));
    }

    #[test]
    fn the_content_hash_is_sha256_of_canonical_json() {
        // Pinned: a change of this value re-applies every child of every object.
        let stamped = stamp(config_map(&[("b", "2"), ("a", "1")])).unwrap();
        assert_eq!(
            stamped.object.annotations()[HASH_ANNOTATION],
            "348a87d32ea877b173f75dd4282461a856d161f8043d2e85c8cb11aeecd46248"
        );
    }

    #[test]
    fn canonical_json_is_the_value_with_sorted_keys() {
        let value = json!({
            "z": {"b": [1, {"y": null, "x": -2.5}], "a": "\"é\n"},
            "Z": true,
            "": [],
            "m": {},
        });
        let mut written = Vec::new();
        write_canonical(&mut written, &value).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            crate::sort_keys(value).to_string()
        );
        assert_eq!(
            content_hash(&json!({"b": 1, "a": 2})),
            content_hash(&json!({"a": 2, "b": 1}))
        );
    }

    #[test]
    fn hash_changes_with_content_and_decides_with_values() {
        let desired = stamp(config_map(&[("a", "1")])).unwrap();
        let same = with_hash(config_map(&[("a", "1")])).unwrap();
        assert_eq!(desired.object.annotations(), same.annotations());
        assert!(desired.is_current(Some(&same)).unwrap());
        assert!(!desired.is_current(None).unwrap());

        let shrunk = stamp(config_map(&[])).unwrap();
        assert!(
            !shrunk.is_current(Some(&desired.object)).unwrap(),
            "a removed field needs an apply"
        );

        let mut edited = desired.object.clone();
        edited.data.as_mut().unwrap().insert("a".into(), "2".into());
        assert!(
            !desired.is_current(Some(&edited)).unwrap(),
            "a hand edit needs an apply"
        );

        let mut defaulted = desired.object.clone();
        defaulted
            .data
            .as_mut()
            .unwrap()
            .insert("b".into(), "2".into());
        assert!(
            desired.is_current(Some(&defaulted)).unwrap(),
            "fields of others need nothing"
        );
    }
}
