//! # The router: who receives what (engine-agnostic, pure)
//!
//! The router makes every forwarding decision of the SFU and knows nothing of WebRTC: the
//! media engine feeds it packet metadata and applies what it returns. It is `std` only and
//! takes the time as an argument, so it is unit-tested without sockets.
//!
//! ## Model
//! - A **peer** is a participant's media presence, with a [`MediaRole`].
//! - A **track** is something a peer publishes: microphone, camera, the room's program video
//!   and audio, a screen. Video tracks have 1 to 3 simulcast **layers**, low to high.
//! - A **slot** is one continuous outgoing stream at a subscriber. Most slots follow one track
//!   ([`Slot::Track`]); the [`Slot::Speaker`] slot follows whoever holds the floor and the
//!   [`Slot::Screen`] slot follows the presenter's screen, so a grant changes the picture
//!   without renegotiation. A slot has one outgoing SSRC and its own sequence numbers and
//!   timestamps; the router rewrites every packet so a switch (of layer or of source) never
//!   shows a gap.
//!
//! ## Policy
//! - Every peer but the room receives the room program (audio, and video on the high layer).
//! - Every peer receives every other peer's microphone; the **floor gate** drops a delegate's
//!   audio at the server unless the gate is open for them (moderated mode: they hold the floor;
//!   the moderator and the room always pass; open mode: everyone passes). A subscriber that
//!   asks for open microphones only ([`Router::set_open_mics_only`], for large meetings) has a
//!   slot only for those: a closed one's slot retires and the next to open reuses it.
//! - Every peer but the room's own feed owner receives the speaker slot (high layer) and the
//!   screen slot. The screen slot shows a presenter's screen, or failing that the screen of a
//!   floor holder who shares one.
//! - Thumbnails: a subscriber that asks gets every other delegate's camera on the low layer.
//! - A video slot switches layer (or source) only at a keyframe of the target; until then the
//!   old source keeps flowing. Keyframe requests are merged per (track, layer), sent at most
//!   once per [`KEYFRAME_INTERVAL_MS`], and repeated until a keyframe arrives; requests to one
//!   track are spaced by [`KEYFRAME_SPACING_MS`] (a browser drops closer ones). A subscriber
//!   asks for nothing until its connection is up ([`Router::subscriber_connected`]).

use std::collections::HashMap;

/// Milliseconds on the caller's clock.
pub type Millis = i64;

/// A peer (one participant's media presence), numbered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// A technician's override of what a subscriber receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Force {
    /// The automatic choice.
    #[default]
    Auto,
    /// Every video on its lowest simulcast layer.
    Low,
    /// No video.
    AudioOnly,
}

/// A published track, numbered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

/// What a peer is, for media purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRole {
    /// The chair: audio always passes.
    Moderator,
    /// A remote delegate: audio passes only with the floor (moderated mode).
    Delegate,
    /// The room endpoint: publishes the program; its audio always passes.
    Room,
    /// Receives only.
    Listener,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Audio (Opus).
    Audio,
    /// Video (VP8).
    Video,
}

/// Where a track comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A microphone.
    Microphone,
    /// A camera.
    Camera,
    /// The room's program (room camera, or room audio mix).
    Program,
    /// A shared screen.
    Screen,
}

/// An outgoing stream at a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Follows one track.
    Track(TrackId),
    /// Follows the floor holder's camera.
    Speaker,
    /// Follows the presenter's screen.
    Screen,
}

/// A subscriber's slot.
type SlotKey = (PeerId, Slot);
/// A (track, layer) that feeds a slot.
type Feed = (TrackId, u8);

/// The layer for a rendered height, or `default` when none is given.
fn fit(height: Option<&u32>, layers: u8, default: u8) -> u8 {
    let Some(&h) = height else {
        return default;
    };
    let top = layers.saturating_sub(1);
    let wanted = match h {
        0..=180 => 0,
        181..=360 => 1,
        _ => 2,
    };
    // With two layers, the upper one is the high one.
    let wanted = if layers == 2 && wanted == 2 {
        1
    } else {
        wanted
    };
    wanted.min(top)
}

/// Minimum time between keyframe requests for one (track, layer).
pub const KEYFRAME_INTERVAL_MS: Millis = 1_000;

/// Minimum time between keyframe requests to one track, whatever the layer. A browser's
/// encoder drops a request that comes within 300 ms of the last one it acted on (libwebrtc's
/// minimum keyframe send interval, per sending stream, all layers at once), so a second
/// request sooner is wasted and its slot waits for the next repeat; spacing them a little
/// wider than that makes every request count. Chrome answers one with a keyframe on every
/// layer, so the request that goes first usually serves the one that waits.
pub const KEYFRAME_SPACING_MS: Millis = 350;

/// A simulcast layer that sent nothing for this long is paused (a browser drops its upper
/// layers when its bandwidth estimate falls): slots that want it fall back to the best layer
/// still flowing, and go back up when it returns (at its keyframe).
pub const LAYER_IDLE_MS: Millis = 1_500;

/// Video RTP clock rate.
const VIDEO_CLOCK_KHZ: i64 = 90;
/// Opus RTP clock rate.
const AUDIO_CLOCK_KHZ: i64 = 48;

/// Metadata of one incoming RTP packet, as the engine parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// The track.
    pub track: TrackId,
    /// Simulcast layer index (0 = lowest).
    pub layer: u8,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Start of a keyframe (video).
    pub keyframe: bool,
}

/// One copy to send: the packet goes to `peer` on `slot`, rewritten to these header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The subscriber.
    pub peer: PeerId,
    /// Its slot.
    pub slot: Slot,
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing sequence number.
    pub seq: u16,
    /// Outgoing timestamp.
    pub timestamp: u32,
}

/// A change to what a subscriber must have negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotChange {
    /// Add a sender for this slot.
    Added {
        /// Subscriber.
        peer: PeerId,
        /// Slot.
        slot: Slot,
        /// Audio or video.
        kind: Kind,
        /// The SSRC the slot sends with.
        ssrc: u32,
    },
    /// Remove it. Its stream is retired: a later slot of the same kind at the same subscriber
    /// may reuse it ([`SlotChange::Reused`]).
    Removed {
        /// Subscriber.
        peer: PeerId,
        /// Slot.
        slot: Slot,
    },
    /// A new slot takes over the retired stream of an earlier one (same subscriber, same kind,
    /// same SSRC, sequence numbers and timestamps continuing): the sender and its m-line are
    /// reused, so nothing is renegotiated and the subscriber's SDP does not grow.
    Reused {
        /// Subscriber.
        peer: PeerId,
        /// The retired slot whose stream is reused.
        from: Slot,
        /// The new slot.
        slot: Slot,
        /// Audio or video.
        kind: Kind,
        /// The SSRC (the retired stream's).
        ssrc: u32,
    },
}

/// Why the router refused something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// No such peer.
    UnknownPeer(PeerId),
    /// No such track.
    UnknownTrack(TrackId),
    /// The track id is taken.
    DuplicateTrack(TrackId),
    /// The role may not publish this.
    NotAllowed(&'static str),
    /// 1 to 3 layers, and only video has more than one.
    BadLayers(u8),
}

impl std::fmt::Display for RouterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterError::UnknownPeer(p) => write!(f, "unknown peer {}", p.0),
            RouterError::UnknownTrack(t) => write!(f, "unknown track {}", t.0),
            RouterError::DuplicateTrack(t) => write!(f, "track {} exists", t.0),
            RouterError::NotAllowed(s) => f.write_str(s),
            RouterError::BadLayers(n) => {
                write!(f, "{n} layers: 1 to 3, more than 1 only for video")
            }
        }
    }
}

impl std::error::Error for RouterError {}

#[derive(Debug)]
struct Peer {
    role: MediaRole,
    thumbnails: bool,
    /// Only microphones whose gate is open get a slot ([`Router::set_open_mics_only`]).
    open_mics_only: bool,
    /// Height the subscriber renders a slot at, in pixels (picks the simulcast layer).
    render: HashMap<Slot, u32>,
    /// Dropped audio packets (floor gate).
    gate_dropped: u64,
    /// A technician's override of what it receives.
    force: Force,
    /// Its subscribing connection has come up ([`Router::subscriber_connected`]): until
    /// then nothing reaches it, so its slots ask for no keyframe (a keyframe made for a
    /// connection still coming up is lost, and would hold back the one it needs).
    up: bool,
}

#[derive(Debug)]
struct Track {
    owner: PeerId,
    kind: Kind,
    source: Source,
    layers: u8,
    /// When each layer last sent a packet.
    seen: [Millis; 3],
    /// Which layers are flowing (a packet within [`LAYER_IDLE_MS`]).
    flowing: [bool; 3],
    /// The first packet of any layer.
    first: Option<Millis>,
    /// [`LAYER_IDLE_MS`] after the first packet: a layer never seen by then is paused.
    settled: bool,
}

/// The state of one outgoing stream.
#[derive(Debug)]
struct Down {
    ssrc: u32,
    kind: Kind,
    /// What it shows now (None: nothing yet).
    current: Option<(TrackId, u8)>,
    /// What it should show; switched to at the target's next keyframe.
    target: Option<(TrackId, u8)>,
    /// Rewriting: out = in + offset (wrapping), per current source.
    seq_offset: u16,
    ts_offset: u32,
    last_out: Option<(u16, u32, Millis)>,
    /// The engine bound a sender to it ([`Router::slot_bound`]): it has an m-line at the
    /// subscriber. Only such streams are worth keeping for reuse when the slot goes.
    bound: bool,
}

/// The router. See the module docs.
#[derive(Debug, Default)]
pub struct Router {
    moderated: bool,
    peers: HashMap<PeerId, Peer>,
    tracks: HashMap<TrackId, Track>,
    /// Floor holders (their audio passes; the first with a camera fills the speaker slot).
    holders: Vec<PeerId>,
    /// Presenters (their screen fills the screen slot).
    presenters: Vec<PeerId>,
    downs: HashMap<(PeerId, Slot), Down>,
    /// Retired streams per (subscriber, kind), oldest first, with the slot they last served:
    /// reused by the next slot of that kind before any new one is added: the slot's own
    /// earlier stream first, else the newest (the one a speaker just left: the next speaker
    /// takes it over). Only streams bound to a sender are kept.
    retired: HashMap<(PeerId, Kind), Vec<(Slot, Down)>>,
    /// For each (track, layer): the slots that take it now or want it at the next keyframe.
    fanout: HashMap<(TrackId, u8), Vec<(PeerId, Slot)>>,
    changes: Vec<SlotChange>,
    /// Keyframe wanted for (track, layer).
    keyframes: HashMap<(TrackId, u8), ()>,
    /// When a keyframe of (track, layer) was last asked for: the throttle outlives the request,
    /// so subscribers arriving one after another still cause at most one request a second.
    last_asked: HashMap<(TrackId, u8), Millis>,
    /// When any layer of a track was last asked for a keyframe ([`KEYFRAME_SPACING_MS`]).
    last_asked_track: HashMap<TrackId, Millis>,
    /// Scratch for [`Router::poll_keyframe_requests`] (kept to avoid allocating per poll).
    due: Vec<(TrackId, u8)>,
    next_ssrc: u32,
    forwarded: u64,
    gate_dropped: u64,
}

impl Router {
    /// A router; `moderated` closes the floor gate for delegates without the floor.
    pub fn new(moderated: bool) -> Router {
        Router {
            moderated,
            next_ssrc: 0x5254_0000,
            ..Router::default()
        }
    }

    /// Adds a peer.
    pub fn add_peer(&mut self, peer: PeerId, role: MediaRole) {
        self.peers.insert(
            peer,
            Peer {
                role,
                thumbnails: false,
                open_mics_only: false,
                render: HashMap::new(),
                gate_dropped: 0,
                force: Force::Auto,
                up: false,
            },
        );
        self.recompute();
    }

    /// Removes a peer with its tracks and slots.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        self.tracks.retain(|_, t| t.owner != peer);
        self.recompute();
        self.retired.retain(|(p, _), _| *p != peer);
    }

    /// Retired streams a subscriber holds (tests; bounded by the most slots it ever had at once).
    pub fn retired(&self, peer: PeerId) -> usize {
        self.retired
            .iter()
            .filter(|((p, _), _)| *p == peer)
            .map(|(_, v)| v.len())
            .sum()
    }

    /// Publishes a track.
    pub fn publish(
        &mut self,
        peer: PeerId,
        track: TrackId,
        kind: Kind,
        source: Source,
        layers: u8,
    ) -> Result<(), RouterError> {
        let role = self
            .peers
            .get(&peer)
            .ok_or(RouterError::UnknownPeer(peer))?
            .role;
        if self.tracks.contains_key(&track) {
            return Err(RouterError::DuplicateTrack(track));
        }
        if layers == 0 || layers > 3 || (kind == Kind::Audio && layers != 1) {
            return Err(RouterError::BadLayers(layers));
        }
        match (role, source) {
            (MediaRole::Listener, _) => {
                return Err(RouterError::NotAllowed("a listener may not publish"));
            }
            (MediaRole::Room, Source::Program)
            | (_, Source::Microphone | Source::Camera | Source::Screen) => {}
            (_, Source::Program) => {
                return Err(RouterError::NotAllowed(
                    "only the room publishes the program",
                ));
            }
        }
        self.tracks.insert(
            track,
            Track {
                owner: peer,
                kind,
                source,
                layers,
                seen: [0; 3],
                flowing: [false; 3],
                first: None,
                settled: false,
            },
        );
        self.recompute();
        Ok(())
    }

    /// Removes a track.
    pub fn unpublish(&mut self, track: TrackId) {
        if self.tracks.remove(&track).is_some() {
            self.recompute();
        }
    }

    /// Sets the floor: mode, holders (in grant order) and presenters.
    pub fn set_floor(&mut self, moderated: bool, holders: &[PeerId], presenters: &[PeerId]) {
        self.moderated = moderated;
        self.holders = holders.to_vec();
        self.presenters = presenters.to_vec();
        self.recompute();
    }

    /// A technician's override of what a subscriber receives: every video on its lowest
    /// layer, or no video at all.
    pub fn set_force(&mut self, peer: PeerId, force: Force) -> Result<(), RouterError> {
        self.peers
            .get_mut(&peer)
            .ok_or(RouterError::UnknownPeer(peer))?
            .force = force;
        self.recompute();
        Ok(())
    }

    /// Audio packets the floor gate held back since the router began (peers gone included).
    pub fn gate_dropped_total(&self) -> u64 {
        self.gate_dropped
    }

    /// The engine bound a sender (an m-line) to this slot's stream: kept for reuse when the
    /// slot goes.
    pub fn slot_bound(&mut self, peer: PeerId, slot: Slot) {
        if let Some(d) = self.downs.get_mut(&(peer, slot)) {
            d.bound = true;
        }
    }

    /// Whether a subscriber receives only the microphones whose floor gate is open (their
    /// slots come and go with the floor; a closed one's slot retires and the next opened one
    /// reuses it) instead of every microphone with the gate dropping the closed ones.
    pub fn set_open_mics_only(&mut self, peer: PeerId, on: bool) -> Result<(), RouterError> {
        self.peers
            .get_mut(&peer)
            .ok_or(RouterError::UnknownPeer(peer))?
            .open_mics_only = on;
        self.recompute();
        Ok(())
    }

    /// Whether a subscriber wants other delegates' cameras as thumbnails.
    pub fn set_thumbnails(&mut self, peer: PeerId, on: bool) -> Result<(), RouterError> {
        self.peers
            .get_mut(&peer)
            .ok_or(RouterError::UnknownPeer(peer))?
            .thumbnails = on;
        self.recompute();
        Ok(())
    }

    /// The height a subscriber renders a slot at (None: the default layer for the slot). The
    /// layer is the smallest that covers it: with three layers (quarter, half, full of 720p)
    /// up to 180 px takes the low layer, up to 360 px the middle one, more the high one.
    pub fn set_render_height(
        &mut self,
        peer: PeerId,
        slot: Slot,
        height: Option<u32>,
    ) -> Result<(), RouterError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(RouterError::UnknownPeer(peer))?;
        match height {
            Some(h) => p.render.insert(slot, h),
            None => p.render.remove(&slot),
        };
        self.recompute();
        Ok(())
    }

    /// Whether `peer`'s audio passes the floor gate now.
    pub fn gate_open(&self, peer: PeerId) -> bool {
        match self.peers.get(&peer).map(|p| p.role) {
            Some(MediaRole::Moderator | MediaRole::Room) => true,
            Some(MediaRole::Delegate) => !self.moderated || self.holders.contains(&peer),
            _ => false,
        }
    }

    /// Audio packets dropped by the gate for `peer`.
    pub fn gate_dropped(&self, peer: PeerId) -> u64 {
        self.peers.get(&peer).map_or(0, |p| p.gate_dropped)
    }

    /// Copies forwarded in all.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Slot changes since the last call (the engine adds or removes senders).
    pub fn take_changes(&mut self) -> Vec<SlotChange> {
        std::mem::take(&mut self.changes)
    }

    /// The slots of a subscriber, with their SSRCs (for a full negotiation).
    pub fn slots(&self, peer: PeerId) -> Vec<(Slot, Kind, u32)> {
        let mut v: Vec<_> = self
            .downs
            .iter()
            .filter(|((p, _), _)| *p == peer)
            .map(|((_, s), d)| (*s, d.kind, d.ssrc))
            .collect();
        v.sort();
        v
    }

    /// Decides where one incoming packet goes; appends to `out` (not cleared). The hot path:
    /// no allocation once the router's tables are built.
    pub fn route(&mut self, now: Millis, pkt: &Incoming, out: &mut Vec<Forward>) {
        let Some(track) = self.tracks.get_mut(&pkt.track) else {
            return;
        };
        let (owner, kind) = (track.owner, track.kind);
        let layer = usize::from(pkt.layer.min(2));
        track.seen[layer] = now;
        track.first.get_or_insert(now);
        if !track.flowing[layer] {
            // A layer (re)starts: slots that fell back from it may go back up.
            track.flowing[layer] = true;
            if track.layers > 1 {
                self.recompute();
            }
        }
        if kind == Kind::Audio && !self.gate_open(owner) {
            if let Some(p) = self.peers.get_mut(&owner) {
                p.gate_dropped += 1;
            }
            self.gate_dropped += 1;
            // The slots showing it stop: when the gate opens again they restart where they
            // left off (next sequence number, timestamp moved on by the time), so a receiver
            // sees no gap of the packets held back (no NACKs, no false loss in its reports).
            let key = (pkt.track, pkt.layer);
            if let Some(slots) = self.fanout.get(&key) {
                for ps in slots {
                    if let Some(d) = self.downs.get_mut(ps)
                        && d.current == Some(key)
                    {
                        d.current = None;
                    }
                }
            }
            return;
        }
        if pkt.keyframe {
            self.keyframes.remove(&(pkt.track, pkt.layer));
        }
        let key = (pkt.track, pkt.layer);
        let Some(slots) = self.fanout.get(&key) else {
            return;
        };
        for &(peer, slot) in slots {
            let Some(down) = self.downs.get_mut(&(peer, slot)) else {
                continue;
            };
            let src = Some(key);
            if down.current != src {
                // A packet of the target: switch at a keyframe (audio: at once).
                if down.target == src && (pkt.keyframe || kind == Kind::Audio) {
                    down.current = src;
                    let (seq, ts) = match down.last_out {
                        Some((s, t, at)) => {
                            let rate = if kind == Kind::Audio {
                                AUDIO_CLOCK_KHZ
                            } else {
                                VIDEO_CLOCK_KHZ
                            };
                            let gap = ((now - at).max(1) * rate) as u32;
                            (s.wrapping_add(1), t.wrapping_add(gap))
                        }
                        None => (pkt.seq, pkt.timestamp),
                    };
                    down.seq_offset = seq.wrapping_sub(pkt.seq);
                    down.ts_offset = ts.wrapping_sub(pkt.timestamp);
                } else {
                    continue;
                }
            }
            let seq = pkt.seq.wrapping_add(down.seq_offset);
            let timestamp = pkt.timestamp.wrapping_add(down.ts_offset);
            down.last_out = Some((seq, timestamp, now));
            out.push(Forward {
                peer,
                slot,
                ssrc: down.ssrc,
                seq,
                timestamp,
            });
            self.forwarded += 1;
        }
    }

    /// A packet of (track, layer) that is not forwarded (padding only): the slots showing it
    /// close the gap in their numbering, so receivers see a contiguous stream.
    pub fn skip(&mut self, track: TrackId, layer: u8) {
        let key = (track, layer);
        let Some(slots) = self.fanout.get(&key) else {
            return;
        };
        for ps in slots {
            if let Some(d) = self.downs.get_mut(ps)
                && d.current == Some(key)
            {
                d.seq_offset = d.seq_offset.wrapping_sub(1);
            }
        }
    }

    /// Keyframe requests to send now: merged per (track, layer), at most one per
    /// [`KEYFRAME_INTERVAL_MS`], repeated until a keyframe arrives.
    /// Requests to one track are spaced by [`KEYFRAME_SPACING_MS`] (highest layer first).
    pub fn poll_keyframe_requests(&mut self, now: Millis, out: &mut Vec<(TrackId, u8)>) {
        self.expire_layers(now);
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        due.extend(self.keyframes.keys().copied());
        due.sort_unstable_by_key(|&(t, l)| (t, std::cmp::Reverse(l)));
        for &key in &due {
            let last = self.last_asked.get(&key).copied();
            let track_last = self.last_asked_track.get(&key.0).copied();
            if last.is_none_or(|l| now - l >= KEYFRAME_INTERVAL_MS)
                && track_last.is_none_or(|l| now - l >= KEYFRAME_SPACING_MS)
            {
                self.last_asked.insert(key, now);
                self.last_asked_track.insert(key.0, now);
                out.push(key);
            }
        }
        self.due = due;
    }

    /// Marks layers that stopped sending as paused, and moves the slots that wanted them.
    pub fn expire_layers(&mut self, now: Millis) {
        let mut changed = false;
        for t in self.tracks.values_mut() {
            if t.layers < 2 {
                continue;
            }
            if !t.settled && t.first.is_some_and(|f| now - f >= LAYER_IDLE_MS) {
                t.settled = true;
                changed |= t.flowing.iter().take(usize::from(t.layers)).any(|f| !f);
            }
            for l in 0..usize::from(t.layers.min(3)) {
                if t.flowing[l] && now - t.seen[l] >= LAYER_IDLE_MS {
                    t.flowing[l] = false;
                    changed = true;
                }
            }
        }
        if changed {
            self.recompute();
        }
    }

    /// The layer to send instead of `wanted` of `track`: `wanted` if it flows (or nothing is
    /// known to flow yet), else the best flowing layer below it, else the lowest above it.
    fn available(&self, track: TrackId, wanted: u8) -> u8 {
        let Some(t) = self.tracks.get(&track) else {
            return wanted;
        };
        let n = usize::from(t.layers.min(3));
        let w = usize::from(wanted).min(n.saturating_sub(1));
        // Until the track settles, a layer not seen yet may still be starting.
        let ok = |l: usize| t.flowing[l] || (!t.settled && t.seen[l] == 0);
        if ok(w) || !(0..n).any(ok) {
            return wanted;
        }
        (0..w)
            .rev()
            .chain(w + 1..n)
            .find(|l| ok(*l))
            .map_or(wanted, |l| l as u8)
    }

    /// A subscriber's connection has just come up: nothing it was "sent" before reached it (the
    /// engine sends only on connected connections), so a video slot that switched to its
    /// source at a keyframe before then would now feed it delta frames it cannot decode. Each
    /// video slot waits for the next keyframe of its source again, and one is asked for
    /// (merged and throttled like every request).
    pub fn subscriber_connected(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.up = true;
        }
        let mut wanted = Vec::new();
        for ((p, _), d) in self.downs.iter_mut() {
            if *p != peer || d.kind != Kind::Video {
                continue;
            }
            if d.target.is_none() {
                d.target = d.current;
            }
            d.current = None;
            wanted.extend(d.target);
        }
        for src in wanted {
            self.keyframes.entry(src).or_insert(());
        }
    }

    /// A subscriber's connection is known to be up (a slot bound on it after it connected):
    /// [`Router::subscriber_connected`] if the router did not know yet, else nothing.
    pub fn subscriber_up(&mut self, peer: PeerId) {
        if self.peers.get(&peer).is_some_and(|p| !p.up) {
            self.subscriber_connected(peer);
        }
    }

    /// A subscriber asked for a keyframe on a slot (PLI from the subscriber).
    pub fn subscriber_wants_keyframe(&mut self, peer: PeerId, slot: Slot) {
        if let Some(src) = self
            .downs
            .get(&(peer, slot))
            .and_then(|d| d.current.or(d.target))
        {
            self.keyframes.entry(src).or_insert(());
        }
    }

    /// Whether a keyframe of (track, layer) is wanted and has not come yet.
    pub fn keyframe_pending(&self, track: TrackId, layer: u8) -> bool {
        self.keyframes.contains_key(&(track, layer))
    }

    // ----- policy ------------------------------------------------------------------------

    /// What each subscriber should receive: slot → (track, layer), or no source yet (the
    /// speaker and screen slots exist for every peer from the start, so no change of speaker
    /// or presenter ever needs a renegotiation).
    fn wanted(&self) -> Vec<(SlotKey, Kind, Option<Feed>)> {
        let mut want = Vec::new();
        let top = |t: &Track| t.layers.saturating_sub(1);
        let speaker_cam = self.holders.iter().find_map(|h| {
            self.tracks
                .iter()
                .find(|(_, t)| t.owner == *h && t.source == Source::Camera)
                .map(|(id, t)| (*id, top(t)))
        });
        // A presenter's screen first; failing that, a floor holder's (a delegate who shares
        // while speaking).
        let screen = self.presenters.iter().chain(&self.holders).find_map(|p| {
            self.tracks
                .iter()
                .find(|(_, t)| t.owner == *p && t.source == Source::Screen)
                .map(|(id, t)| (*id, top(t)))
        });
        for (&pid, peer) in &self.peers {
            for (&tid, t) in &self.tracks {
                if t.owner == pid {
                    continue;
                }
                let layer = match (t.source, t.kind) {
                    (_, Kind::Audio) if peer.open_mics_only && !self.gate_open(t.owner) => None,
                    (_, Kind::Audio) => Some(0),
                    (Source::Program, Kind::Video) => Some(top(t)),
                    (Source::Camera, Kind::Video) if peer.thumbnails => Some(0),
                    _ => None,
                };
                if let Some(layer) = layer {
                    let layer = fit(peer.render.get(&Slot::Track(tid)), t.layers, layer);
                    let layer = self.available(tid, layer);
                    want.push(((pid, Slot::Track(tid)), t.kind, Some((tid, layer))));
                }
            }
            let not_own = |src: Option<(TrackId, u8)>| {
                src.filter(|(tid, _)| self.tracks.get(tid).is_some_and(|t| t.owner != pid))
            };
            let sized = |slot: Slot, src: Option<Feed>| {
                src.map(|(tid, layer)| {
                    let layers = self.tracks.get(&tid).map_or(1, |t| t.layers);
                    (
                        tid,
                        self.available(tid, fit(peer.render.get(&slot), layers, layer)),
                    )
                })
            };
            want.push((
                (pid, Slot::Speaker),
                Kind::Video,
                sized(Slot::Speaker, not_own(speaker_cam)),
            ));
            want.push((
                (pid, Slot::Screen),
                Kind::Video,
                sized(Slot::Screen, not_own(screen)),
            ));
        }
        want
    }

    /// Brings slots, targets and the fan-out table in line with the policy.
    fn recompute(&mut self) {
        let want: Vec<_> = self
            .wanted()
            .into_iter()
            .map(|(key, kind, src)| {
                let force = self.peers.get(&key.0).map_or(Force::Auto, |p| p.force);
                let src = match (kind, force) {
                    (Kind::Video, Force::Low) => src.map(|(t, _)| (t, self.available(t, 0))),
                    (Kind::Video, Force::AudioOnly) => None,
                    _ => src,
                };
                (key, kind, src)
            })
            .collect();
        let wanted_keys: std::collections::HashSet<(PeerId, Slot)> =
            want.iter().map(|(k, _, _)| *k).collect();
        // Slots nobody wants any more go.
        let mut gone: Vec<(PeerId, Slot)> = self
            .downs
            .keys()
            .filter(|k| !wanted_keys.contains(k))
            .copied()
            .collect();
        gone.sort();
        for key in gone {
            if let Some(mut down) = self.downs.remove(&key) {
                down.current = None;
                down.target = None;
                // A stream never bound to a sender has no m-line: nothing to reuse.
                if down.bound && self.peers.contains_key(&key.0) {
                    self.retired
                        .entry((key.0, down.kind))
                        .or_default()
                        .push((key.1, down));
                }
            }
            self.changes.push(SlotChange::Removed {
                peer: key.0,
                slot: key.1,
            });
        }
        for down in self.downs.values_mut() {
            down.target = None;
        }
        for (key, kind, src) in want {
            if !self.downs.contains_key(&key) {
                let reuse = self.retired.get_mut(&(key.0, kind)).and_then(|v| {
                    // The slot's own earlier stream if it has one (a speaker granted again),
                    // else the newest (the one a speaker just left). So a slot has at most
                    // one retired stream.
                    match v.iter().position(|(s, _)| *s == key.1) {
                        Some(i) => Some(v.remove(i)),
                        None => v.pop(),
                    }
                });
                let down = match reuse {
                    Some((from, down)) => {
                        self.changes.push(SlotChange::Reused {
                            peer: key.0,
                            from,
                            slot: key.1,
                            kind,
                            ssrc: down.ssrc,
                        });
                        down
                    }
                    None => {
                        self.next_ssrc = self.next_ssrc.wrapping_add(1);
                        let ssrc = self.next_ssrc;
                        self.changes.push(SlotChange::Added {
                            peer: key.0,
                            slot: key.1,
                            kind,
                            ssrc,
                        });
                        Down {
                            ssrc,
                            kind,
                            current: None,
                            target: None,
                            seq_offset: 0,
                            ts_offset: 0,
                            last_out: None,
                            bound: false,
                        }
                    }
                };
                self.downs.insert(key, down);
            }
            if let Some(down) = self.downs.get_mut(&key) {
                down.target = src;
            }
        }
        // A slot whose target differs from what it shows needs a keyframe of the target;
        // one whose target is gone shows nothing.
        let mut need = Vec::new();
        for ((peer, _), down) in self.downs.iter_mut() {
            let up = self.peers.get(peer).is_some_and(|p| p.up);
            match down.target {
                None => down.current = None,
                Some(t) if down.current != Some(t) && down.kind == Kind::Video && up => {
                    need.push(t)
                }
                _ => {}
            }
        }
        for t in need {
            self.keyframes.entry(t).or_insert(());
        }
        // Requests for what no slot shows or wants any more are withdrawn.
        let downs = &self.downs;
        self.keyframes.retain(|k, _| {
            downs
                .values()
                .any(|d| d.target == Some(*k) || d.current == Some(*k))
        });
        self.last_asked
            .retain(|(t, _), _| self.tracks.contains_key(t));
        self.last_asked_track
            .retain(|t, _| self.tracks.contains_key(t));
        self.fanout.clear();
        for (&key, down) in &self.downs {
            for src in [down.current, down.target].into_iter().flatten() {
                let list = self.fanout.entry(src).or_default();
                if !list.contains(&key) {
                    list.push(key);
                }
            }
        }
        for list in self.fanout.values_mut() {
            list.sort();
        }
    }
}

#[cfg(test)]
mod tests;
