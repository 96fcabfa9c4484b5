//! # The floor and agenda engine
//!
//! Pure logic, `std` only: commands and the time go in, events come out. No clock, no I/O,
//! no async. The meeting task (`crate::meeting`) owns one [`Engine`] per meeting, journals
//! the events it returns, and broadcasts them.
//!
//! ## Contract
//! - [`Engine::handle`] takes an [`Actor`] (already role-checked by the meeting layer), a
//!   [`Command`] and `now`. It validates the whole command first; on error nothing changed.
//!   On success it returns the [`Event`]s, already applied, in order.
//! - Every state change goes through [`Engine::apply`]. Replaying the journal's events with
//!   their times through `apply` rebuilds exactly the same engine (a test proves it).
//! - Time-driven announcements (speaking warning, overrun, auto-revoke at the limit, agenda
//!   item warning and overrun) come from [`Engine::tick`]; [`Engine::next_deadline`] tells the
//!   caller when to call it next. Deadlines are absolute server times.
//!
//! ## Vocabulary
//! BFCP (RFC 8855) request states: pending, accepted (queued, with a position), granted, and
//! the final released, denied, cancelled, revoked. Congress-system chair actions: next, max
//! open microphones with wait or override, chair priority, a reply list, requests on behalf of
//! people in the room. docs/FLOOR-CONTROL.md has the state table.

mod engine;
mod types;

pub use engine::{Engine, MAX_EXTEND_MINUTES, MAX_NAME_LEN, MAX_TIMER_MESSAGE};
pub use types::*;

#[cfg(test)]
mod tests;
