//! # roundtable: a session host for moderated hybrid roundtables
//!
//! One server runs the moderated dialogue between a physical room and remote delegates: the
//! speaker queue, raised hands (also for people in the room), grants and revokes, timed agenda
//! slots, with every floor event journaled durably and exportable as minutes.
//!
//! ## Layout
//! - [`floor`]: the pure floor and agenda engine (std only; time is an argument).
//! - [`meeting`]: one task per meeting owning its engine, participants and sequence number;
//!   journals events before broadcasting them.
//! - [`store`]: the SQLite journal (group commit, synced) and the minutes built from it.
//! - [`http`]: `app()`, the axum router: websocket, minutes API, health.
//! - [`auth`]: HMAC-signed invite tokens and the server secret.
//! - [`invites`]: invites revoked by the chair or redeemed once, checked before every upgrade.
//! - [`config`]: TOML configuration; `config/default.toml` (the Baku roundtable) is built in.
//! - [`server`]: `prepare`/`serve`/`run(listener, config, clock, shutdown)`, called by `main`
//!   and by the integration tests alike.
//! - [`clock`]: system or manual time (tests run a whole agenda in virtual time).
//! - [`heap`]: the counted global allocator (live heap bytes, for `/metrics` and the soak).
//!
//! The wire protocol lives in the `roundtable-signaling` crate; docs/ARCHITECTURE.md says who
//! owns what and what may depend on what.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod floor;
pub mod health;
pub mod heap;
pub mod http;
pub mod invites;
pub mod media;
pub mod meeting;
pub mod metrics;
pub mod server;
pub mod store;
