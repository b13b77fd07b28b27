//! The credentials Secret `<name>-mongo-credentials`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Instance, PASSWORD_KEY, USERNAME_KEY};
use crate::labels::Component;

/// MongoDB's root user.
pub const USERNAME: &str = "root";
/// Length of a generated password: 32 letters and digits, about 190 bits.
pub const PASSWORD_LEN: usize = 32;

/// A fresh random password of letters and digits, so it needs no escaping in a URI.
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// The Secret holding `password`. It has no owner reference: under `Retain` it must
/// outlive the `FlaskMongoApp`, like the data it opens.
pub fn build(instance: &Instance<'_>, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(instance.secret_name()),
            namespace: Some(instance.namespace.to_owned()),
            labels: Some(instance.labels(Component::Mongo)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([
            (USERNAME_KEY.to_owned(), USERNAME.to_owned()),
            (PASSWORD_KEY.to_owned(), password.to_owned()),
        ])),
        ..Secret::default()
    }
}
