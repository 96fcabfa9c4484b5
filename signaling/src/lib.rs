//! # roundtable-signaling: the wire protocol of the meeting websocket
//!
//! Every message is one JSON object in one websocket text frame, tagged by a `"type"` field.
//! This crate holds the types only (serde, no I/O), so the server, the bench client and the
//! tests share one definition. docs/PROTOCOL.md is the prose specification with an example of
//! every message; `fixtures/` holds those examples as files and the tests round-trip each one.
//!
//! ## Conventions
//! - Times are absolute server times in milliseconds since the Unix epoch (`*_at`, `deadline`).
//!   The server never sends "seconds left": a client learns its clock offset with `ping`/`pong`
//!   and computes countdowns itself, so every screen shows the same second.
//! - Durations are milliseconds (`*_ms`).
//! - Every client command carries an `id` chosen by the client; the server answers it with
//!   exactly one `ack` or `error` carrying the same `id`.
//! - Events carry a per-meeting sequence number `seq`, gap-free and increasing; the `welcome`
//!   snapshot says which `seq` it reflects.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod common;
mod health;
mod server;

pub use client::*;
pub use common::*;
pub use health::*;
pub use server::*;

/// The protocol version this crate speaks. A client announces it in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
