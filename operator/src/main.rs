//! `operator`: runs the FlaskMongoApp controller.
fn main() {}
