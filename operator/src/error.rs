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
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 409)
    }

    /// A short CamelCase reason for conditions, Events and the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "Conflict",
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422 => "Invalid",
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "Forbidden",
            Self::Kube {
                source: kube::Error::Api(_),
                ..
            } => "ApiError",
            Self::Kube { .. } => "RequestFailed",
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::CredentialsMissing { .. } => "CredentialsMissing",
            Self::Serialize { .. } => "SerializeFailed",
            Self::Cached { .. } => "CacheUnreadable",
            Self::LeadershipLost(_) => "LeadershipLost",
            Self::Serve { .. } => "ServeFailed",
            Self::Yaml(_) => "SerializeFailed",
            Self::Config(_) => "InvalidConfig",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
