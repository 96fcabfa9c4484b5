//! # Media: the SFU
//!
//! - [`router`]: every forwarding decision (who receives what, which layer, the floor gate,
//!   keyframe merging, header rewriting), engine-agnostic and pure.
//!
//! The engine that drives webrtc-rs's sans-IO core on one UDP socket is being built beside it;
//! no module outside `media` touches its types.

pub mod router;
pub mod rtp;
pub mod turn;
