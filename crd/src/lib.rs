//! The `FlaskMongoApp` custom resource.
