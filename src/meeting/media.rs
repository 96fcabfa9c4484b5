//! The meeting's media side: turns the media commands of its participants into engine calls,
//! keeps each participant's two peer connections and their slots, and tells the room's router
//! about the floor. Owned by the meeting task like the rest of its state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use roundtable_signaling::{
    self as sig, ErrorCode, MediaSource, PeerConnectionKind, Role, SlotInfo,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Msg;
use crate::media::engine::{
    ConnId, MediaError, MediaEvent, MediaEvents, MediaHandle, MediaKind, OutTrackId, RoomId,
    RouterOp, TrackSpec,
};
use crate::media::router::{Kind, MediaRole, PeerId, Slot, SlotChange, Source, TrackId};
use crate::media::sdp;

/// Shared by every meeting: the engine, connection ids, and who owns which connection (so the
/// engine's events reach the right meeting task).
#[derive(Debug, Clone)]
pub struct MediaHub {
    /// The engine.
    pub engine: MediaHandle,
    next_conn: Arc<AtomicU64>,
    owners: Arc<DashMap<ConnId, mpsc::WeakSender<Msg>>>,
}

impl MediaHub {
    /// Wraps an engine and starts the task that dispatches its events to meetings.
    pub fn new(engine: MediaHandle, mut events: MediaEvents) -> MediaHub {
        let owners: Arc<DashMap<ConnId, mpsc::WeakSender<Msg>>> = Arc::default();
        let map = owners.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let conn = match &event {
                    MediaEvent::ConnectionState { conn, .. }
                    | MediaEvent::TrackOpened { conn, .. }
                    | MediaEvent::TimedOut { conn }
                    | MediaEvent::Speaking { conn, .. }
                    | MediaEvent::Sample { conn, .. }
                    | MediaEvent::KeyframeRequest { conn, .. } => *conn,
                };
                let owner = map.get(&conn).and_then(|w| w.upgrade());
                if let Some(tx) = owner {
                    let _ = tx.send(Msg::Media(event)).await;
                }
            }
        });
        MediaHub {
            engine,
            next_conn: Arc::new(AtomicU64::new(1)),
            owners,
        }
    }

    fn new_conn(&self, owner: &mpsc::WeakSender<Msg>) -> ConnId {
        let id = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        self.owners.insert(id, owner.clone());
        id
    }

    fn forget(&self, conn: ConnId) {
        self.owners.remove(&conn);
    }
}

/// One participant's media.
#[derive(Debug, Default)]
struct Peer {
    id: u32,
    publisher: Option<ConnId>,
    /// The screen-share connection (a second sending connection).
    screen: Option<ConnId>,
    subscriber: Option<ConnId>,
    /// The publisher's tracks by `msid` track id: what they carry (from the `publish`
    /// command's mid map and the offer) and, once open, the router's track id.
    sources: HashMap<String, (MediaSource, Option<TrackId>, u8)>,
    /// The slots this participant receives: slot → (kind, engine track once negotiated).
    slots: BTreeMap<Slot, (Kind, Option<OutTrackId>)>,
    /// Our offer awaits the client's answer.
    offer_pending: bool,
    /// Slots added while an offer was pending.
    queued: Vec<Slot>,
    /// The `mid` of each slot's m-line on the subscribe connection.
    mids: HashMap<String, Slot>,
    /// Removed slots whose stream (and m-line) the router may hand to a later slot.
    retired: HashMap<Slot, (Kind, Option<OutTrackId>)>,
}

/// The media state of one meeting.
#[derive(Debug)]
pub struct MeetingMedia {
    hub: MediaHub,
    room: RoomId,
    me: mpsc::WeakSender<Msg>,
    peers: HashMap<String, Peer>,
    next_peer: u32,
    next_track: u32,
}

/// Frames for participants: (participant id, message).
pub type Outbox = Vec<(String, sig::ServerMessage)>;

/// What an engine event means for the meeting beyond media signaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A participant's microphone started or stopped carrying speech.
    Speech(Speech),
    /// A participant's connection measured itself (stream health).
    Sample {
        /// Whose.
        participant: String,
        /// Which of their connections.
        link: crate::health::Link,
        /// The measurements.
        sample: Box<crate::media::meter::LinkSample>,
    },
}

/// A participant's microphone started or stopped carrying speech.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// Whose.
    pub participant: String,
    /// Speaking now.
    pub speaking: bool,
    /// Mean level, -dBov (0 loud … 127 silent).
    pub level: u8,
}

fn media_role(role: Role) -> MediaRole {
    match role {
        Role::Moderator => MediaRole::Moderator,
        Role::Delegate => MediaRole::Delegate,
        Role::Room => MediaRole::Room,
        _ => MediaRole::Listener,
    }
}

fn err(e: MediaError) -> (ErrorCode, String) {
    let code = match e {
        MediaError::SdpTooLarge(_) | MediaError::NoSupportedCodec | MediaError::Rtc(_) => {
            ErrorCode::BadSdp
        }
        MediaError::Router(_) => ErrorCode::Forbidden,
        _ => ErrorCode::MediaUnavailable,
    };
    (code, e.to_string())
}

impl MeetingMedia {
    /// The media side of room `room`.
    pub fn new(hub: MediaHub, room: u32, me: mpsc::WeakSender<Msg>) -> MeetingMedia {
        MeetingMedia {
            hub,
            room: RoomId(room),
            me,
            peers: HashMap::new(),
            next_peer: 1,
            next_track: 1,
        }
    }

    fn peer_of(&self, participant: &str) -> Option<PeerId> {
        self.peers.get(participant).map(|p| PeerId(p.id))
    }

    fn participant_of_peer(&self, peer: PeerId) -> Option<&str> {
        self.peers
            .iter()
            .find(|(_, p)| p.id == peer.0)
            .map(|(k, _)| k.as_str())
    }

    async fn ensure_peer(
        &mut self,
        participant: &str,
        role: Role,
        out: &mut Outbox,
    ) -> Result<PeerId, (ErrorCode, String)> {
        if let Some(p) = self.peer_of(participant) {
            return Ok(p);
        }
        let id = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(
            participant.to_owned(),
            Peer {
                id,
                ..Peer::default()
            },
        );
        let changes = self
            .hub
            .engine
            .router(self.room, RouterOp::AddPeer(PeerId(id), media_role(role)))
            .await
            .map_err(err)?;
        self.apply_changes(changes, out).await;
        Ok(PeerId(id))
    }

    /// `publish`: answer the offer of the participant's publish connection.
    pub async fn publish(
        &mut self,
        participant: &str,
        role: Role,
        pc: PeerConnectionKind,
        offer: String,
        tracks: Vec<sig::PublishTrack>,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        for t in &tracks {
            if t.source == MediaSource::Program && role != Role::Room {
                return Err((
                    ErrorCode::Forbidden,
                    "only the room publishes the program".into(),
                ));
            }
            if (pc == PeerConnectionKind::Screen) != (t.source == MediaSource::Screen) {
                return Err((
                    ErrorCode::InvalidFields,
                    "a screen share goes on its own connection (pc: screen), and only it".into(),
                ));
            }
        }
        if pc == PeerConnectionKind::Subscribe {
            return Err((
                ErrorCode::InvalidFields,
                "publish takes pc publish or screen; the server offers the subscribe connection"
                    .into(),
            ));
        }
        self.ensure_peer(participant, role, out).await?;
        let sections = sdp::sections(&offer);
        let existing = self.peers.get(participant).and_then(|p| match pc {
            PeerConnectionKind::Screen => p.screen,
            _ => p.publisher,
        });
        let conn = existing.unwrap_or_else(|| self.hub.new_conn(&self.me));
        let answer = match existing {
            Some(c) => self.hub.engine.update_publisher(c, offer).await,
            None => self.hub.engine.create_publisher(conn, offer).await,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                if existing.is_none() {
                    self.hub.forget(conn);
                }
                return Err(err(e));
            }
        };
        if let Some(p) = self.peers.get_mut(participant) {
            match pc {
                PeerConnectionKind::Screen => p.screen = Some(conn),
                _ => p.publisher = Some(conn),
            }
            for t in tracks {
                let section = sections
                    .iter()
                    .find(|s| s.mid.as_deref() == Some(t.mid.as_str()));
                let key = section
                    .and_then(|s| s.msid_track.clone())
                    .unwrap_or_else(|| format!("mid:{}", t.mid));
                let layers = section.map_or(1, |s| s.rids.len().clamp(1, 3) as u8);
                p.sources.entry(key).or_insert((t.source, None, layers));
            }
        }
        out.push((
            participant.to_owned(),
            sig::ServerMessage::PublishAnswer { pc, sdp: answer },
        ));
        Ok(())
    }

    /// `unpublish`: closes a sending connection; its tracks leave every subscriber (their
    /// m-lines go quiet and are reused for later tracks).
    pub async fn unpublish(
        &mut self,
        participant: &str,
        pc: PeerConnectionKind,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        let screen = match pc {
            PeerConnectionKind::Screen => true,
            PeerConnectionKind::Publish => false,
            PeerConnectionKind::Subscribe => {
                return Err((
                    ErrorCode::InvalidFields,
                    "unpublish takes pc publish or screen".into(),
                ));
            }
        };
        let Some(p) = self.peers.get_mut(participant) else {
            return Err((ErrorCode::InvalidState, "nothing published".into()));
        };
        let conn = if screen {
            p.screen.take()
        } else {
            p.publisher.take()
        }
        .ok_or((
            ErrorCode::InvalidState,
            "that connection does not exist".to_owned(),
        ))?;
        let mut gone = Vec::new();
        p.sources.retain(|_, (source, track, _)| {
            let on_conn = (*source == MediaSource::Screen) == screen;
            if on_conn {
                gone.extend(*track);
            }
            !on_conn
        });
        let _ = self.hub.engine.remove_connection(conn).await;
        self.hub.forget(conn);
        for track in gone {
            match self
                .hub
                .engine
                .router(self.room, RouterOp::Unpublish(track))
                .await
            {
                Ok(changes) => self.apply_changes(changes, out).await,
                Err(e) => warn!(%e, "router refused an unpublish"),
            }
        }
        Ok(())
    }

    /// `media_preferences`: the first one opens the subscribe connection.
    pub async fn preferences(
        &mut self,
        participant: &str,
        role: Role,
        thumbnails: bool,
        microphones: Option<sig::Microphones>,
        render: Vec<sig::RenderSize>,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        let peer = self.ensure_peer(participant, role, out).await?;
        // Absent: as before (a later call that only changes `render` keeps it).
        let mics =
            microphones.map(|m| RouterOp::SetOpenMicsOnly(peer, m == sig::Microphones::Open));
        for op in mics
            .into_iter()
            .chain([RouterOp::SetThumbnails(peer, thumbnails)])
        {
            let changes = self.hub.engine.router(self.room, op).await.map_err(err)?;
            self.apply_changes(changes, out).await;
        }
        for size in render {
            let slot = self
                .peers
                .get(participant)
                .and_then(|p| p.mids.get(&size.mid).copied())
                .ok_or_else(|| {
                    (
                        ErrorCode::NotFound,
                        format!("no received m-line with mid {:?}", size.mid),
                    )
                })?;
            let height = (size.height > 0).then_some(size.height);
            let changes = self
                .hub
                .engine
                .router(self.room, RouterOp::SetRenderHeight(peer, slot, height))
                .await
                .map_err(err)?;
            self.apply_changes(changes, out).await;
        }
        let has_sub = self
            .peers
            .get(participant)
            .and_then(|p| p.subscriber)
            .is_some();
        if has_sub {
            return Ok(());
        }
        let conn = self.hub.new_conn(&self.me);
        let slots: Vec<(Slot, Kind)> = self
            .peers
            .get(participant)
            .map(|p| p.slots.iter().map(|(s, (k, _))| (*s, *k)).collect())
            .unwrap_or_default();
        let specs: Vec<TrackSpec> = slots.iter().map(|(s, k)| self.spec(*s, *k)).collect();
        let offer = match self.hub.engine.create_subscriber(conn, specs).await {
            Ok(o) => o,
            Err(e) => {
                self.hub.forget(conn);
                return Err(err(e));
            }
        };
        for ((slot, _), info) in slots.iter().zip(&offer.tracks) {
            if let Err(e) = self
                .hub
                .engine
                .bind_egress(self.room, peer, *slot, conn, info.id)
                .await
            {
                warn!(%e, "binding a slot failed");
            }
            if let Some(p) = self.peers.get_mut(participant) {
                if let Some(entry) = p.slots.get_mut(slot) {
                    entry.1 = Some(info.id);
                }
            }
        }
        if let Some(p) = self.peers.get_mut(participant) {
            p.subscriber = Some(conn);
            p.offer_pending = true;
        }
        let slots = self.slot_infos(participant, &offer.sdp);
        out.push((
            participant.to_owned(),
            sig::ServerMessage::SubscribeOffer {
                sdp: offer.sdp,
                slots,
            },
        ));
        Ok(())
    }

    /// `subscribe_answer`.
    pub async fn answer(
        &mut self,
        participant: &str,
        sdp: String,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        let conn = self
            .peers
            .get(participant)
            .and_then(|p| p.subscriber)
            .ok_or((
                ErrorCode::InvalidState,
                "no subscribe offer to answer".to_owned(),
            ))?;
        self.hub.engine.set_answer(conn, sdp).await.map_err(err)?;
        let queued = match self.peers.get_mut(participant) {
            Some(p) => {
                p.offer_pending = false;
                std::mem::take(&mut p.queued)
            }
            None => Vec::new(),
        };
        if !queued.is_empty() {
            self.add_slots(participant, &queued, out).await;
        }
        Ok(())
    }

    /// `ice_restart`: a new offer with new ICE credentials on the subscribe connection
    /// (replacing an unanswered one), sent as `subscribe_offer`.
    pub async fn restart_ice(
        &mut self,
        participant: &str,
        pc: sig::PeerConnectionKind,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        if pc != sig::PeerConnectionKind::Subscribe {
            return Err((
                ErrorCode::InvalidFields,
                "the server restarts only the subscribe connection; a sending connection \
                 restarts with a new publish offer (restartIce)"
                    .into(),
            ));
        }
        let conn = self
            .peers
            .get(participant)
            .and_then(|p| p.subscriber)
            .ok_or((
                ErrorCode::NotFound,
                "no subscribe connection to restart: open one with media_preferences".to_owned(),
            ))?;
        let sdp = self
            .hub
            .engine
            .restart_subscriber(conn)
            .await
            .map_err(err)?;
        if let Some(p) = self.peers.get_mut(participant) {
            p.offer_pending = true;
        }
        let slots = self.slot_infos(participant, &sdp);
        out.push((
            participant.to_owned(),
            sig::ServerMessage::SubscribeOffer { sdp, slots },
        ));
        Ok(())
    }

    /// `ice_candidate` from the client.
    pub async fn candidate(
        &mut self,
        participant: &str,
        pc: PeerConnectionKind,
        candidate: String,
    ) -> Result<(), (ErrorCode, String)> {
        let p = self
            .peers
            .get(participant)
            .ok_or((ErrorCode::InvalidState, "no peer connection yet".to_owned()))?;
        let conn = match pc {
            PeerConnectionKind::Publish => p.publisher,
            PeerConnectionKind::Screen => p.screen,
            PeerConnectionKind::Subscribe => p.subscriber,
        }
        .ok_or((
            ErrorCode::InvalidState,
            "that peer connection does not exist yet".to_owned(),
        ))?;
        self.hub
            .engine
            .add_remote_candidate(conn, candidate)
            .await
            .map_err(err)
    }

    /// An engine event about one of this meeting's connections. A change of someone's
    /// speaking state, and a connection's measurements, are returned for the meeting (it
    /// knows who may hear it, and keeps the stream health).
    pub async fn event(&mut self, event: MediaEvent, out: &mut Outbox) -> Option<Note> {
        match event {
            MediaEvent::Sample { conn, sample } => {
                let (participant, link) = self.link_of(conn)?;
                return Some(Note::Sample {
                    participant,
                    link,
                    sample,
                });
            }
            MediaEvent::Speaking {
                conn,
                speaking,
                level,
                ..
            } => {
                let participant = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.publisher == Some(conn) || p.screen == Some(conn))
                    .map(|(k, _)| k.clone())?;
                return Some(Note::Speech(Speech {
                    participant,
                    speaking,
                    level,
                }));
            }
            MediaEvent::TrackOpened {
                conn,
                track,
                kind,
                ssrc,
                rid,
            } => self.track_opened(conn, track, kind, ssrc, rid, out).await,
            MediaEvent::TimedOut { conn } => {
                self.hub.forget(conn);
                for p in self.peers.values_mut() {
                    if p.publisher == Some(conn) {
                        p.publisher = None;
                    }
                    if p.screen == Some(conn) {
                        p.screen = None;
                    }
                    if p.subscriber == Some(conn) {
                        p.subscriber = None;
                    }
                }
            }
            MediaEvent::ConnectionState { conn, state } => {
                debug!(%conn, ?state, "media connection");
            }
            MediaEvent::KeyframeRequest { .. } => {}
        }
        None
    }

    async fn track_opened(
        &mut self,
        conn: ConnId,
        track: String,
        kind: MediaKind,
        ssrc: u32,
        rid: Option<String>,
        out: &mut Outbox,
    ) {
        let Some((participant, peer)) = self
            .peers
            .iter()
            .find(|(_, p)| p.publisher == Some(conn) || p.screen == Some(conn))
            .map(|(k, p)| (k.clone(), PeerId(p.id)))
        else {
            return;
        };
        let rkind = match kind {
            MediaKind::Audio => Kind::Audio,
            MediaKind::Video => Kind::Video,
        };
        let entry = {
            let Some(p) = self.peers.get_mut(&participant) else {
                return;
            };
            // By msid; failing that, the first source of this kind not yet open.
            let key = if p.sources.contains_key(&track) {
                Some(track.clone())
            } else {
                None
            };
            key.map(|k| (k.clone(), p.sources[&k]))
        };
        let Some((key, (source, existing, layers))) = entry else {
            warn!(%participant, %track, "a track the publish command did not name");
            return;
        };
        let track_id = match existing {
            Some(t) => t,
            None => {
                let t = TrackId(self.next_track);
                self.next_track += 1;
                let source = match source {
                    MediaSource::Microphone => Source::Microphone,
                    MediaSource::Camera => Source::Camera,
                    MediaSource::Screen => Source::Screen,
                    MediaSource::Program => Source::Program,
                };
                let layers = if rkind == Kind::Audio { 1 } else { layers };
                match self
                    .hub
                    .engine
                    .router(
                        self.room,
                        RouterOp::Publish {
                            peer,
                            track: t,
                            kind: rkind,
                            source,
                            layers,
                        },
                    )
                    .await
                {
                    Ok(changes) => {
                        // Known before the slots are offered, so the offer names the owner.
                        if let Some(p) = self.peers.get_mut(&participant) {
                            if let Some(s) = p.sources.get_mut(&key) {
                                s.1 = Some(t);
                            }
                        }
                        self.apply_changes(changes, out).await;
                    }
                    Err(e) => {
                        warn!(%participant, %e, "router refused a track");
                        return;
                    }
                }
                t
            }
        };
        let layer = rid.as_deref().map_or(0, |r| {
            sdp::layer_of(r, &["q".into(), "h".into(), "f".into()]).min(layers.saturating_sub(1))
        });
        if let Err(e) = self
            .hub
            .engine
            .bind_ingress(conn, ssrc, kind, self.room, track_id, layer)
            .await
        {
            warn!(%e, "binding an inbound stream failed");
        }
    }

    /// Records slot changes; negotiates added slots with subscribers that have a connection.
    async fn apply_changes(&mut self, changes: Vec<SlotChange>, out: &mut Outbox) {
        let mut added: HashMap<String, Vec<Slot>> = HashMap::new();
        let mut relabeled: std::collections::BTreeSet<String> = Default::default();
        for c in changes {
            match c {
                SlotChange::Added {
                    peer, slot, kind, ..
                } => {
                    let Some(participant) = self.participant_of_peer(peer).map(str::to_owned)
                    else {
                        continue;
                    };
                    if let Some(p) = self.peers.get_mut(&participant) {
                        p.slots.insert(slot, (kind, None));
                        if p.subscriber.is_some() {
                            added.entry(participant).or_default().push(slot);
                        }
                    }
                }
                SlotChange::Removed { peer, slot } => {
                    // The m-line stays (no renegotiation); the slot goes quiet until the
                    // router reuses its stream for another slot of the same kind.
                    let participant = self.participant_of_peer(peer).map(str::to_owned);
                    if let Some(p) = participant.and_then(|x| self.peers.get_mut(&x)) {
                        if let Some(entry) = p.slots.remove(&slot) {
                            p.retired.insert(slot, entry);
                        }
                        p.queued.retain(|q| *q != slot);
                    }
                }
                SlotChange::Reused {
                    peer,
                    from,
                    slot,
                    kind,
                    ..
                } => {
                    let Some(participant) = self.participant_of_peer(peer).map(str::to_owned)
                    else {
                        continue;
                    };
                    let Some(p) = self.peers.get_mut(&participant) else {
                        continue;
                    };
                    match p.retired.remove(&from) {
                        // Negotiated: the engine moved the binding; the client is told what
                        // the m-line carries now.
                        Some((_, Some(out_track))) => {
                            p.slots.insert(slot, (kind, Some(out_track)));
                            for s in p.mids.values_mut() {
                                if *s == from {
                                    *s = slot;
                                }
                            }
                            relabeled.insert(participant);
                        }
                        // Never negotiated: a new slot like any other.
                        _ => {
                            p.slots.insert(slot, (kind, None));
                            if p.subscriber.is_some() {
                                added.entry(participant).or_default().push(slot);
                            }
                        }
                    }
                }
            }
        }
        for participant in relabeled {
            if added.contains_key(&participant) {
                continue; // the coming offer names every m-line
            }
            let Some(p) = self.peers.get(&participant) else {
                continue;
            };
            if p.subscriber.is_none() {
                continue;
            }
            let slots = self.describe_mids(&participant);
            out.push((participant, sig::ServerMessage::SubscribeSlots { slots }));
        }
        for (participant, slots) in added {
            let pending = self
                .peers
                .get(&participant)
                .is_some_and(|p| p.offer_pending);
            if pending {
                if let Some(p) = self.peers.get_mut(&participant) {
                    p.queued.extend(slots);
                }
            } else {
                Box::pin(self.add_slots(&participant, &slots, out)).await;
            }
        }
    }

    /// Adds tracks for `slots` to the participant's subscribe connection and sends the new
    /// offer (one renegotiation for the lot).
    async fn add_slots(&mut self, participant: &str, slots: &[Slot], out: &mut Outbox) {
        let Some((conn, peer)) = self
            .peers
            .get(participant)
            .and_then(|p| p.subscriber.map(|c| (c, PeerId(p.id))))
        else {
            return;
        };
        let mut last_offer = None;
        for slot in slots {
            let Some(kind) = self
                .peers
                .get(participant)
                .and_then(|p| p.slots.get(slot).map(|s| s.0))
            else {
                continue;
            };
            match self
                .hub
                .engine
                .add_track(conn, self.spec(*slot, kind))
                .await
            {
                Ok((info, offer)) => {
                    let _ = self
                        .hub
                        .engine
                        .bind_egress(self.room, peer, *slot, conn, info.id)
                        .await;
                    if let Some(p) = self.peers.get_mut(participant) {
                        if let Some(e) = p.slots.get_mut(slot) {
                            e.1 = Some(info.id);
                        }
                        p.offer_pending = true;
                    }
                    last_offer = Some(offer);
                }
                Err(MediaError::NegotiationPending(_)) => {
                    if let Some(p) = self.peers.get_mut(participant) {
                        p.queued.push(*slot);
                    }
                }
                Err(e) => warn!(%participant, %e, "adding a slot failed"),
            }
        }
        if let Some(sdp) = last_offer {
            let slots = self.slot_infos(participant, &sdp);
            out.push((
                participant.to_owned(),
                sig::ServerMessage::SubscribeOffer { sdp, slots },
            ));
        }
    }

    fn track_name(slot: Slot) -> String {
        match slot {
            Slot::Track(t) => format!("track-{}", t.0),
            Slot::Speaker => "speaker".into(),
            Slot::Screen => "screen".into(),
        }
    }

    fn spec(&self, slot: Slot, kind: Kind) -> TrackSpec {
        let stream = match slot {
            Slot::Track(t) => self
                .owner_of(t)
                .map_or_else(|| "roundtable".to_owned(), |(p, _)| p),
            Slot::Speaker => "speaker".into(),
            Slot::Screen => "screen".into(),
        };
        TrackSpec {
            kind: match kind {
                Kind::Audio => MediaKind::Audio,
                Kind::Video => MediaKind::Video,
            },
            stream_id: stream,
            track_id: Self::track_name(slot),
        }
    }

    fn owner_of(&self, track: TrackId) -> Option<(String, MediaSource)> {
        self.peers.iter().find_map(|(name, p)| {
            p.sources
                .values()
                .find(|(_, t, _)| *t == Some(track))
                .map(|(s, _, _)| (name.clone(), *s))
        })
    }

    /// What each m-line of `sdp` carries, by the track names we gave the slots; remembers
    /// each slot's `mid`.
    fn slot_infos(&mut self, participant: &str, sdp_text: &str) -> Vec<SlotInfo> {
        let mut mids = HashMap::new();
        let infos = self.describe(participant, sdp_text, &mut mids);
        if let Some(p) = self.peers.get_mut(participant) {
            p.mids.extend(mids);
        }
        infos
    }

    fn describe(
        &self,
        participant: &str,
        sdp_text: &str,
        mids: &mut HashMap<String, Slot>,
    ) -> Vec<SlotInfo> {
        let Some(p) = self.peers.get(participant) else {
            return Vec::new();
        };
        let mut infos = Vec::new();
        for section in sdp::sections(sdp_text) {
            let (Some(mid), Some(track)) = (section.mid, section.msid_track) else {
                continue;
            };
            // A reused m-line keeps its first msid: what it carries now is in `mids`.
            let known = p
                .mids
                .get(&mid)
                .and_then(|s| p.slots.get_key_value(s))
                .or_else(|| p.slots.iter().find(|(s, _)| Self::track_name(**s) == track));
            let Some((slot, (kind, _))) = known else {
                continue;
            };
            mids.insert(mid.clone(), *slot);
            infos.push(self.slot_info(mid, *slot, *kind));
        }
        infos
    }

    /// What every live m-line of the participant's subscribe connection carries, from `mids`.
    fn describe_mids(&self, participant: &str) -> Vec<SlotInfo> {
        let Some(p) = self.peers.get(participant) else {
            return Vec::new();
        };
        let mut mids: Vec<(&String, &Slot)> = p.mids.iter().collect();
        mids.sort_by_key(|(m, _)| (m.len(), m.as_str()));
        mids.into_iter()
            .filter_map(|(mid, slot)| {
                let (kind, _) = p.slots.get(slot)?;
                Some(self.slot_info(mid.clone(), *slot, *kind))
            })
            .collect()
    }

    fn slot_info(&self, mid: String, slot: Slot, kind: Kind) -> SlotInfo {
        match slot {
            Slot::Speaker => SlotInfo::Speaker { mid },
            Slot::Screen => SlotInfo::Screen { mid },
            Slot::Track(t) => {
                let (owner, source) = self
                    .owner_of(t)
                    .unwrap_or_else(|| (String::new(), MediaSource::Microphone));
                SlotInfo::Track {
                    mid,
                    participant: owner,
                    source,
                    kind: match kind {
                        Kind::Audio => "audio".into(),
                        Kind::Video => "video".into(),
                    },
                }
            }
        }
    }

    /// Tells the router who holds the floor and who presents.
    pub async fn set_floor(
        &mut self,
        moderated: bool,
        holders: &[String],
        presenters: &[String],
        out: &mut Outbox,
    ) {
        if self.peers.is_empty() {
            return;
        }
        let holders: Vec<PeerId> = holders.iter().filter_map(|h| self.peer_of(h)).collect();
        let presenters: Vec<PeerId> = presenters.iter().filter_map(|h| self.peer_of(h)).collect();
        match self
            .hub
            .engine
            .router(
                self.room,
                RouterOp::SetFloor {
                    moderated,
                    holders,
                    presenters,
                },
            )
            .await
        {
            Ok(changes) => self.apply_changes(changes, out).await,
            Err(e) => warn!(%e, "router refused the floor"),
        }
    }

    /// Whether the participant has media here (a router peer, with or without connections).
    pub fn has_peer(&self, participant: &str) -> bool {
        self.peers.contains_key(participant)
    }

    /// The participant left: close their connections and take them out of the router.
    pub async fn leave(&mut self, participant: &str, out: &mut Outbox) {
        let Some(p) = self.peers.remove(participant) else {
            return;
        };
        for conn in [p.publisher, p.screen, p.subscriber].into_iter().flatten() {
            let _ = self.hub.engine.remove_connection(conn).await;
            self.hub.forget(conn);
        }
        if let Ok(changes) = self
            .hub
            .engine
            .router(self.room, RouterOp::RemovePeer(PeerId(p.id)))
            .await
        {
            self.apply_changes(changes, out).await;
        }
    }

    /// Fault injection on the participant's subscribe connection.
    pub async fn inject_loss(&self, participant: &str, permille: u16) -> bool {
        let Some(conn) = self.peers.get(participant).and_then(|p| p.subscriber) else {
            return false;
        };
        self.hub.engine.set_loss(conn, permille).await.is_ok()
    }

    /// Whose connection `conn` is, and which.
    pub fn link_of(&self, conn: ConnId) -> Option<(String, crate::health::Link)> {
        use crate::health::Link;
        self.peers.iter().find_map(|(id, p)| {
            let link = if p.publisher == Some(conn) {
                Link::Publish
            } else if p.screen == Some(conn) {
                Link::Screen
            } else if p.subscriber == Some(conn) {
                Link::Subscribe
            } else {
                return None;
            };
            Some((id.clone(), link))
        })
    }

    /// A technician asks a participant's camera and screen for a keyframe.
    pub async fn request_keyframes(&self, participant: &str) -> Result<usize, (ErrorCode, String)> {
        let p = self
            .peers
            .get(participant)
            .ok_or_else(|| (ErrorCode::NotFound, format!("{participant} has no media")))?;
        let conns: Vec<ConnId> = [p.publisher, p.screen].into_iter().flatten().collect();
        if conns.is_empty() {
            return Err((
                ErrorCode::InvalidState,
                format!("{participant} publishes no video"),
            ));
        }
        let mut n = 0;
        for c in conns {
            n += self.hub.engine.request_keyframes(c).await.map_err(err)?;
        }
        if n == 0 {
            return Err((
                ErrorCode::InvalidState,
                format!("{participant} sends no video yet"),
            ));
        }
        Ok(n)
    }

    /// A technician forces what a participant receives.
    pub async fn force_layer(
        &mut self,
        participant: &str,
        layer: sig::ForceLayer,
        out: &mut Outbox,
    ) -> Result<(), (ErrorCode, String)> {
        use crate::media::router::Force;
        let peer = self
            .peer_of(participant)
            .ok_or_else(|| (ErrorCode::NotFound, format!("{participant} has no media")))?;
        let force = match layer {
            sig::ForceLayer::Auto => Force::Auto,
            sig::ForceLayer::Low => Force::Low,
            sig::ForceLayer::AudioOnly => Force::AudioOnly,
        };
        let changes = self
            .hub
            .engine
            .router(self.room, RouterOp::SetForce(peer, force))
            .await
            .map_err(err)?;
        self.apply_changes(changes, out).await;
        Ok(())
    }

    /// Floor-gate drops for a participant (tests, metrics).
    pub async fn gate_dropped(&self, participant: &str) -> u64 {
        match self.peer_of(participant) {
            Some(peer) => self
                .hub
                .engine
                .gate_dropped(self.room, peer)
                .await
                .unwrap_or(0),
            None => 0,
        }
    }
}
