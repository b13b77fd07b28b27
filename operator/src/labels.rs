//! The `app.kubernetes.io/*` labels every child carries, and the labels that lead from a
//! child back to its `FlaskMongoApp`.

use std::collections::BTreeMap;

/// Field manager of every apply and value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = "flaskmongo-operator";
/// `app.kubernetes.io/name`: the application.
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the `FlaskMongoApp`'s name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: `web` or `mongo`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/version`: the component's image tag.
pub const VERSION: &str = "app.kubernetes.io/version";
/// Namespace of the owning `FlaskMongoApp`, on objects that cannot carry an owner
/// reference to it (the cluster-scoped PersistentVolume, the retained Secret).
pub const OWNER_NAMESPACE: &str = "flaskmongo.dev/namespace";
/// Value of `app.kubernetes.io/name` and `part-of`.
pub const APP_NAME: &str = "flaskmongo";

/// The label selector of every watch: only objects this operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// The label selector of the MongoDB claims. The StatefulSet controller labels each claim
/// with its template's labels and the pod selector's (name, instance, component), never
/// with `managed-by`, so the claims are selected by these.
pub fn claim_selector() -> String {
    format!(
        "{NAME}={APP_NAME},{COMPONENT}={}",
        Component::Mongo.as_str()
    )
}

/// The two tiers of the app, and the pod that prepares MongoDB's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The web Deployment and what serves it.
    Web,
    /// MongoDB and its storage.
    Mongo,
    /// The one-shot pod that hands a volume's directory to MongoDB's user.
    VolumePreparation,
    /// The pods on every node that hand new volumes' directories to MongoDB's user.
    VolumePreparer,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Mongo => "mongo",
            Self::VolumePreparation => "volume-preparation",
            Self::VolumePreparer => "volume-preparer",
        }
    }
}

/// The labels pods are selected by. They never change over an object's life, since a
/// Deployment's and a StatefulSet's selectors are immutable.
pub fn selector(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = instance_selector(instance);
    labels.insert(COMPONENT.to_owned(), component.as_str().to_owned());
    labels
}

/// The labels the pods of both tiers are selected by.
pub fn instance_selector(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP_NAME.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
    ])
}

/// All labels of a child of `instance` in `namespace` running `image`.
pub fn labels(
    instance: &str,
    namespace: &str,
    component: Component,
    image: &str,
) -> BTreeMap<String, String> {
    let mut labels = selector(instance, component);
    labels.insert(PART_OF.to_owned(), APP_NAME.to_owned());
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(OWNER_NAMESPACE.to_owned(), namespace.to_owned());
    if let Some(version) = image_version(image) {
        labels.insert(VERSION.to_owned(), version);
    }
    labels
}

/// The `(namespace, name)` of the `FlaskMongoApp` a labelled object belongs to.
pub fn owner(labels: &BTreeMap<String, String>) -> Option<(&str, &str)> {
    if labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGER) {
        return None;
    }
    Some((
        labels.get(OWNER_NAMESPACE)?.as_str(),
        labels.get(INSTANCE)?.as_str(),
    ))
}

/// The tag of an image reference, made into a valid label value (at most 63 characters of
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit).
/// `None` when the image has no tag (only a digest, or `latest` implied).
pub fn image_version(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last_segment.rsplit_once(':')?;
    let cleaned: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_image_tag() {
        assert_eq!(
            image_version("flaskmongo/webapp:0.1.0").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            image_version("registry:5000/mongo:7.0.16").as_deref(),
            Some("7.0.16")
        );
        assert_eq!(image_version("registry:5000/mongo"), None);
        assert_eq!(image_version("mongo@sha256:abc"), None);
        assert_eq!(
            image_version("mongo:7.0@sha256:abc").as_deref(),
            Some("7.0")
        );
        assert_eq!(image_version("x:-a+b-").as_deref(), Some("a_b"));
        assert_eq!(
            image_version(&format!("x:{}", "a".repeat(100))).map(|v| v.len()),
            Some(63)
        );
    }

    #[test]
    fn owner_comes_back_from_the_labels() {
        let labels = labels("shop", "team-a", Component::Mongo, "mongo:7.0.16");
        assert_eq!(owner(&labels), Some(("team-a", "shop")));
        assert_eq!(owner(&selector("shop", Component::Mongo)), None);
    }
}
