//! `webapp`: serves the `/data` API.
fn main() {}
