//! The `/data` web service.
