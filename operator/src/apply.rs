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

/// Stamps `desired` with the hash of its content, so a later change of the spec is seen
/// even when it only removes fields.
pub fn with_hash<K: Resource + Serialize>(mut desired: K) -> Result<K> {
    let hash = content_hash(&desired)?;
    desired
        .annotations_mut()
        .insert(HASH_ANNOTATION.to_owned(), hash);
    Ok(desired)
}

/// SHA-256 of the object's JSON with sorted keys: the same on every build and Rust
/// release, so an upgraded operator re-applies only the children it changes.
fn content_hash<K: Serialize>(object: &K) -> Result<String> {
    let canonical = crate::sort_keys(to_value(object)?).to_string();
    Ok(Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn to_value<K: Serialize>(object: &K) -> Result<Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: std::any::type_name::<K>().to_owned(),
        source,
    })
}

/// Whether `live` already is what applying `desired` (stamped by [`with_hash`]) would make
/// it: same hash, and every value `desired` sets present and equal in `live`.
pub fn is_current<K: Resource + Serialize>(desired: &K, live: Option<&K>) -> Result<bool> {
    let Some(live) = live else { return Ok(false) };
    if desired.annotations().get(HASH_ANNOTATION) != live.annotations().get(HASH_ANNOTATION) {
        return Ok(false);
    }
    Ok(contains(&to_value(desired)?, &to_value(live)?))
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
        assert_eq!(
            content_hash(&config_map(&[("b", "2"), ("a", "1")])).unwrap(),
            "348a87d32ea877b173f75dd4282461a856d161f8043d2e85c8cb11aeecd46248"
        );
    }

    #[test]
    fn hash_changes_with_content_and_decides_with_values() {
        let desired = with_hash(config_map(&[("a", "1")])).unwrap();
        let same = with_hash(config_map(&[("a", "1")])).unwrap();
        assert_eq!(desired.annotations(), same.annotations());
        assert!(is_current(&desired, Some(&same)).unwrap());
        assert!(!is_current(&desired, None).unwrap());

        let shrunk = with_hash(config_map(&[])).unwrap();
        assert!(
            !is_current(&shrunk, Some(&desired)).unwrap(),
            "a removed field needs an apply"
        );

        let mut edited = desired.clone();
        edited.data.as_mut().unwrap().insert("a".into(), "2".into());
        assert!(
            !is_current(&desired, Some(&edited)).unwrap(),
            "a hand edit needs an apply"
        );

        let mut defaulted = desired.clone();
        defaulted
            .data
            .as_mut()
            .unwrap()
            .insert("b".into(), "2".into());
        assert!(
            is_current(&desired, Some(&defaulted)).unwrap(),
            "fields of others need nothing"
        );
    }
}
