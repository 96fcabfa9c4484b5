//! # Media: the SFU
//!
//! - [`engine`]: the WebRTC engine. One thread owns one UDP socket shared by every peer
//!   connection and drives webrtc-rs's sans-IO core (`rtc`) from it; async code reaches it with
//!   commands over a channel and hears from it through an event channel. It is the only module
//!   that touches `rtc` types. Its module docs hold the run-loop contract.
//! - [`router`]: every forwarding decision (who receives what, which layer, the floor gate,
//!   keyframe merging, header rewriting), engine-agnostic and pure.
//! - [`meter`]: per-stream measurements on the receive path (loss from gaps, RFC 3550
//!   jitter, frames, keyframes, audio level), pure; the engine samples them once a second
//!   ([`engine::MediaEvent::Sample`]) for stream health.
//!
//! - [`sdp`], [`rtp`], [`stun`]: what the engine reads of SDP, RTP payloads and STUN itself;
//!   pure and dependency-free, so the `media_input` fuzz target (fuzz/) includes them as they are.
//!
//! Until the engine calls into the router, it carries a minimal forwarding table of its own
//! (`engine::ForwardTable`).

pub mod engine;
pub mod levels;
pub mod meter;
pub mod router;
pub mod rtp;
pub mod sdp;
pub mod stun;
pub mod tcp;
pub mod turn;
