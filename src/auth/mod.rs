//! Authentication primitives: JWTs and password hashes. The HTTP side (the bearer
//! extractor) lives in `crate::http::auth`.

pub mod jwt;
pub mod password;
