//! The FlaskMongoApp controller.
