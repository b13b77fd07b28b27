//! The operator's one error type.

use std::net::SocketAddr;

/// Everything that can go wrong while running or reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, naming the object.
        action: String,
        /// The client's or the server's error.
        #[source]
        source: kube::Error,
    },
    /// The object lacks metadata the API server always sets (name, namespace or uid).
    #[error("FlaskMongoApp has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// Data exists on a retained volume but the Secret with its password is gone.
    #[error(
        "{volume} holds the data of an earlier FlaskMongoApp of this name, but Secret {secret} \
         with its password is gone; restore the Secret (keys username and password) or delete the volume"
    )]
    CredentialsMissing {
        /// The PersistentVolume or claim that holds the data.
        volume: String,
        /// The missing Secret.
        secret: String,
    },
    /// The volume name this object uses belongs to something else: it is never touched.
    #[error(
        "PersistentVolume {volume} is not this object's (it is bound to {owner}); \
         the operator leaves it alone: an administrator must remove or rename it"
    )]
    VolumeTaken {
        /// The volume.
        volume: String,
        /// Whom it is bound to.
        owner: String,
    },
    /// The pod that hands a volume's directory to MongoDB's user failed.
    #[error(
        "the pod {pod} that prepares the directory of PersistentVolume {volume} failed: {why}; \
         see `kubectl logs -n {pod_namespace} {pod}`, and delete the pod to try again"
    )]
    VolumePreparationFailed {
        /// The volume.
        volume: String,
        /// The pod's name.
        pod: String,
        /// The pod's namespace.
        pod_namespace: String,
        /// The pod's or its container's words.
        why: String,
    },
    /// A volume from before MongoDB ran without root lies outside the volume root: the
    /// operator hands no directory outside the root to anyone.
    #[error(
        "PersistentVolume {volume} keeps its data in {path}, outside the volume root {root}: \
         the operator does not change owners there. On its node, run `chown -R 999:999 {path}`, \
         then `kubectl annotate pv {volume} flaskmongo.dev/data-owner=999:999`"
    )]
    VolumeOutsideRoot {
        /// The volume.
        volume: String,
        /// Its directory.
        path: String,
        /// The volume root.
        root: String,
    },
    /// No node has a Ready volume preparer, so no node would hand a new volume's directory
    /// to MongoDB's user: MongoDB waits, and the rest of the object with it.
    #[error(
        "no node can take a new volume yet: no pod of the volume preparer, DaemonSet \
         {namespace}/{daemon_set}, is Ready (`kubectl -n {namespace} get pods \
         -l app.kubernetes.io/instance={daemon_set}` shows why)"
    )]
    NoVolumePreparer {
        /// The DaemonSet's namespace.
        namespace: String,
        /// Its name.
        daemon_set: String,
    },
    /// An object could not be turned into JSON.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// The object.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A cached object could not be parsed back from its JSON.
    #[error("cannot read the cached {what}: {source}")]
    Cached {
        /// The object.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process took the leader Lease (or it could not be renewed in time).
    #[error("lost the leader Lease {0}")]
    LeadershipLost(String),
    /// The metrics and health server could not listen.
    #[error("cannot serve metrics and health on {addr}: {source}")]
    Serve {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The CRD could not be rendered as YAML.
    #[error("cannot render the CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Whether the API server refused a write because the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if Refusal::of(source) == Some(Refusal::Conflict))
    }

    /// Whether the API server found no such object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if Refusal::of(source) == Some(Refusal::NotFound))
    }

    /// Whether retrying cannot help until the object itself changes: then the operator
    /// waits for a change instead of backing off. Everything else is transient and retried
    /// with backoff, including refusals that depend on other objects (a node port taken by
    /// another Service is a 422 that clears when that Service goes) and missing credentials
    /// (restoring a Secret without the operator's labels triggers no watch).
    pub fn is_permanent(&self) -> bool {
        match self {
            // The object lacks what the API server always sets, or a child built from its
            // spec cannot be serialized: the same object fails the same way.
            Self::MissingMetadata(_) | Self::Serialize { .. } => true,
            // Retrying cannot help until the failed pod is deleted or the volume is
            // annotated; both are watched, so either starts the next reconcile.
            Self::VolumePreparationFailed { .. } | Self::VolumeOutsideRoot { .. } => true,
            Self::Kube { .. }
            | Self::CredentialsMissing { .. }
            | Self::VolumeTaken { .. }
            | Self::NoVolumePreparer { .. }
            | Self::Cached { .. }
            | Self::LeadershipLost(_)
            | Self::Serve { .. }
            | Self::Yaml(_)
            | Self::Config(_) => false,
        }
    }

    /// A short CamelCase reason for conditions, Events and the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match Refusal::of(source) {
                Some(Refusal::Conflict) => "Conflict",
                Some(Refusal::Invalid) => "Invalid",
                Some(Refusal::Forbidden) => "Forbidden",
                Some(Refusal::NotFound | Refusal::Gone | Refusal::Other) => "ApiError",
                None => "RequestFailed",
            },
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::CredentialsMissing { .. } => "CredentialsMissing",
            Self::VolumeTaken { .. } => "VolumeTaken",
            Self::VolumePreparationFailed { .. } => "VolumePreparationFailed",
            Self::VolumeOutsideRoot { .. } => "VolumeOutsideRoot",
            Self::NoVolumePreparer { .. } => "NoVolumePreparer",
            Self::Serialize { .. } => "SerializeFailed",
            Self::Cached { .. } => "CacheUnreadable",
            Self::LeadershipLost(_) => "LeadershipLost",
            Self::Serve { .. } => "ServeFailed",
            Self::Yaml(_) => "SerializeFailed",
            Self::Config(_) => "InvalidConfig",
        }
    }
}

/// How the API server refused a request: the one place that reads HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the operator's role does not allow it.
    Forbidden,
    /// 404: the object does not exist.
    NotFound,
    /// 409: the object already exists (a create), or changed since it was read (an update
    /// with a resourceVersion).
    Conflict,
    /// 410: a watch asked for a resourceVersion the API server no longer has.
    Gone,
    /// 422: the object is invalid, or clashes with another (a node port already allocated).
    Invalid,
    /// Any other refusal.
    Other,
}

impl Refusal {
    /// The refusal `error` is, or `None` when the API server did not answer at all.
    pub fn of(error: &kube::Error) -> Option<Self> {
        let kube::Error::Api(status) = error else {
            return None;
        };
        Some(match status.code {
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 => Self::Conflict,
            410 => Self::Gone,
            422 => Self::Invalid,
            _ => Self::Other,
        })
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
pub(crate) mod tests {
    use kube::core::Status;

    use super::*;

    /// The API server's refusal with `code`.
    pub(crate) fn refused(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("refused", "").with_code(code).boxed())
    }

    #[test]
    fn refusals_come_from_the_status_code() {
        let cases = [
            (403, Refusal::Forbidden),
            (404, Refusal::NotFound),
            (409, Refusal::Conflict),
            (410, Refusal::Gone),
            (422, Refusal::Invalid),
            (500, Refusal::Other),
        ];
        for (code, refusal) in cases {
            assert_eq!(Refusal::of(&refused(code)), Some(refusal), "{code}");
        }
        let unanswered = kube::Error::LinesCodecMaxLineLengthExceeded;
        assert_eq!(Refusal::of(&unanswered), None);
    }

    #[test]
    fn only_what_the_same_object_repeats_is_permanent() {
        let conflict = Error::kube("patch", refused(409));
        assert!(conflict.is_conflict());
        assert_eq!(conflict.reason(), "Conflict");
        let cases = [
            (conflict, false),
            (Error::kube("apply", refused(422)), false),
            (
                Error::CredentialsMissing {
                    volume: "PersistentVolume v".into(),
                    secret: "s".into(),
                },
                false,
            ),
            (Error::MissingMetadata("uid"), true),
            (
                Error::Serialize {
                    what: "x".into(),
                    source: serde_json::from_str::<u8>("x").unwrap_err(),
                },
                true,
            ),
        ];
        for (error, permanent) in cases {
            assert_eq!(error.is_permanent(), permanent, "{error}");
        }
    }
}
