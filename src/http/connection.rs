//! One websocket connection: a reader loop (this task) and a writer task, split as in axum's
//! chat example. The reader enforces the frame size and rate limits, answers `hello` and
//! `ping` itself, and forwards commands to the meeting task. The writer drains the
//! connection's bounded channel, where the meeting puts acks, errors and events in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roundtable_signaling::{
    self as sig, Command, ErrorCode, PROTOCOL_VERSION, ServerMessage, parse_client_message,
};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span, warn};

use super::Shared;
use crate::meeting::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, CONNECTION_QUEUE, MeetingHandle, Msg, Outbound, Who, encode,
    error_frame,
};

/// Rejected frames within [`FLOOD_WINDOW`] after which the connection is closed.
pub const FLOOD_LIMIT: u32 = 200;
/// The window over which rejected frames are counted.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket: `rate` per second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one upgraded websocket for a verified participant.
pub async fn serve(socket: WebSocket, shared: Arc<Shared>, who: Who, meeting: MeetingHandle) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("conn", conn, meeting = %meeting.id, participant = %who.id);
    shared.ws_clients.fetch_add(1, Ordering::Relaxed);
    run(socket, &shared, conn, who, meeting)
        .instrument(span)
        .await;
    shared.ws_clients.fetch_sub(1, Ordering::Relaxed);
}

async fn run(socket: WebSocket, shared: &Shared, conn: u64, who: Who, meeting: MeetingHandle) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(CONNECTION_QUEUE);
    let mut writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                Outbound::Text(t) => {
                    if sink.send(Message::Text(t)).await.is_err() {
                        return;
                    }
                }
                Outbound::Close(t, code) => {
                    let _ = sink.send(Message::Text(t)).await;
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: "".into(),
                        })))
                        .await;
                    return;
                }
            }
        }
        // The meeting dropped us (too slow, or replaced): close politely.
        let _ = sink.send(Message::Close(None)).await;
    });

    // Before `hello` this task holds the only strong sender; after it, the meeting does and
    // this task keeps a weak one, so the writer ends when the meeting lets go.
    let mut strong = Some(out_tx);
    let weak = strong.as_ref().map(|s| s.downgrade());
    macro_rules! reply {
        ($frame:expr) => {
            if let Some(s) = strong_or_weak(&strong, &weak) {
                let _ = s.try_send(Outbound::Text($frame));
            }
        };
    }
    let mut shutdown = shared.shutdown.clone();
    let mut bucket = Bucket::new(
        shared.limits.commands_per_second,
        shared.limits.command_burst,
    );
    let mut window = (Instant::now(), 0u32);
    let max_frame = shared.limits.max_frame_bytes;

    let presence = loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    None | Some(Err(_)) => break sig::Presence::ConnectionLost,
                    Some(Ok(Message::Close(_))) => break sig::Presence::Left,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => None,
                    Some(Ok(Message::Text(t))) => Some(t),
                };
                // Every data frame, text or binary, counts against the rate limit.
                if !bucket.take() {
                    if window.0.elapsed() > FLOOD_WINDOW {
                        window = (Instant::now(), 0);
                    }
                    window.1 += 1;
                    if window.1 > FLOOD_LIMIT {
                        warn!("sustained command flood: closing the connection");
                        let bye = encode(&ServerMessage::Goodbye { reason: "flood".into() });
                        if let Some(s) = strong_or_weak(&strong, &weak) {
                            let _ = s.try_send(Outbound::Close(bye, CLOSE_POLICY));
                        }
                        // Keep reading (and discarding) briefly: closing a socket with unread
                        // input resets it, and the peer would lose the goodbye.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some(Ok(_)) = stream.next().await {}
                        })
                        .await;
                        break sig::Presence::ConnectionLost;
                    }
                    reply!(error_frame(None, ErrorCode::RateLimited, "too many commands: slow down"));
                    continue;
                }
                let Some(text) = text else {
                    reply!(error_frame(None, ErrorCode::BinaryFrame, "binary frames are not part of the protocol; send JSON text"));
                    continue;
                };
                if text.len() > max_frame {
                    reply!(error_frame(None, ErrorCode::TooLarge, format!("frame of {} bytes exceeds the {max_frame}-byte limit", text.len())));
                    continue;
                }
                let msg = match parse_client_message(text.as_str()) {
                    Ok(m) => m,
                    Err((id, e)) => {
                        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                        reply!(error_frame(id, e.code(), e.message()));
                        continue;
                    }
                };
                match msg.command {
                    Command::Ping { client_time } => reply!(encode(&ServerMessage::Pong {
                        id: msg.id,
                        client_time,
                        server_time: shared.clock.now(),
                    })),
                    Command::Hello { protocol, resume_seq } => {
                        if protocol != PROTOCOL_VERSION {
                            reply!(error_frame(Some(msg.id), ErrorCode::UnsupportedProtocol, format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}")));
                        } else if let Some(out) = strong.take() {
                            if !meeting.send(Msg::Join { conn, who: who.clone(), out, resume: resume_seq }).await {
                                break sig::Presence::Left;
                            }
                        } else {
                            reply!(error_frame(Some(msg.id), ErrorCode::InvalidState, "already joined"));
                        }
                    }
                    _ if strong.is_some() => {
                        reply!(error_frame(Some(msg.id), ErrorCode::HelloRequired, "send hello first"));
                    }
                    _ => {
                        if !meeting.send(Msg::Command { conn, msg }).await {
                            break sig::Presence::Left;
                        }
                    }
                }
            }
            _ = &mut writer => break sig::Presence::ConnectionLost,
            _ = shutdown.changed() => {
                let bye = encode(&ServerMessage::Goodbye { reason: "shutdown".into() });
                if let Some(s) = strong_or_weak(&strong, &weak) {
                    let _ = s.try_send(Outbound::Close(bye, CLOSE_GOING_AWAY));
                }
                break sig::Presence::Left;
            }
        }
    };
    debug!(?presence, "connection ended");
    if strong.is_none() {
        meeting.send(Msg::Leave { conn, presence }).await;
    }
    drop(strong);
    // Let the writer flush a goodbye, but never wait long on a dead peer.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        writer.abort();
    }
}

fn strong_or_weak(
    strong: &Option<mpsc::Sender<Outbound>>,
    weak: &Option<mpsc::WeakSender<Outbound>>,
) -> Option<mpsc::Sender<Outbound>> {
    strong
        .clone()
        .or_else(|| weak.as_ref().and_then(|w| w.upgrade()))
}
