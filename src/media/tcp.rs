//! # ICE-TCP: the media port on TCP as well (RFC 6544 passive, RFC 4571 framing)
//!
//! For venues and delegates behind networks that block UDP. The engine advertises a `tcp
//! passive` host candidate on the same address as its UDP one; browsers connect to it
//! (`tcptype active`) and ICE, DTLS and SRTP run over the stream, each packet framed with a
//! 16-bit length.
//!
//! Threads: one acceptor (`rt-ice-tcp`), and one reader per accepted stream (`rt-ice-tcp-conn`) that
//! decodes frames and hands each packet to the media thread as a command (followed by the
//! wake datagram), so the media thread stays the only owner of every peer connection. The
//! media thread writes framed packets itself, on a clone of the stream with a short send
//! timeout: a peer that stops reading is dropped rather than allowed to stall the loop. At
//! most [`MAX_STREAMS`] streams at once; more are refused at accept.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rtc::shared::tcp_framing::TcpFrameDecoder;
use tracing::{debug, info, warn};

/// Most TCP streams open at once.
pub const MAX_STREAMS: usize = 256;

/// How long the media thread may block writing to one stream before dropping it.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(20);

/// What the TCP threads tell the media thread.
#[derive(Debug)]
pub enum TcpInput {
    /// A stream was accepted: the media thread's writing end.
    Opened(SocketAddr, TcpStream),
    /// One decoded packet from a stream.
    Packet(SocketAddr, Vec<u8>),
    /// The stream ended.
    Closed(SocketAddr),
}

/// Stops the acceptor when dropped (or on [`TcpSide::stop`]).
#[derive(Debug)]
pub struct TcpSide {
    /// The listener's address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpSide {
    /// Stops accepting (streams already open end when the media thread drops them).
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            // Unblock the acceptor's accept().
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
    }
}

impl Drop for TcpSide {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the acceptor on `listener`; every input goes through `deliver` (which sends it to
/// the media thread and wakes it; it returns false once the engine is gone).
pub fn start(
    listener: TcpListener,
    deliver: impl Fn(TcpInput) -> bool + Send + Sync + 'static,
) -> io::Result<TcpSide> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let deliver = Arc::new(deliver);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("rt-ice-tcp".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if open.load(Ordering::SeqCst) >= MAX_STREAMS {
                    warn!("ICE-TCP: too many streams; refused one");
                    continue;
                }
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let writer = match stream.try_clone() {
                    Ok(w) => w,
                    Err(err) => {
                        warn!(%err, "ICE-TCP: cannot clone a stream");
                        continue;
                    }
                };
                let _ = writer.set_write_timeout(Some(SEND_TIMEOUT));
                if !deliver(TcpInput::Opened(peer, writer)) {
                    break;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let (deliver, open) = (deliver.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name("rt-ice-tcp-conn".to_owned())
                    .spawn(move || {
                        read_stream(stream, peer, &*deliver);
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(err) = spawned {
                    warn!(%err, "ICE-TCP: cannot start a reader");
                }
            }
            debug!("ICE-TCP acceptor stopped");
        })?;
    info!(%addr, "ICE-TCP listening");
    Ok(TcpSide { addr, stop })
}

fn read_stream(mut stream: TcpStream, peer: SocketAddr, deliver: &dyn Fn(TcpInput) -> bool) {
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                decoder.extend_from_slice(&buf[..n]);
                while let Some(packet) = decoder.next_packet() {
                    if !deliver(TcpInput::Packet(peer, packet)) {
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                }
                // A peer that sends garbage length prefixes cannot make us buffer much: one
                // frame is at most 64 KiB.
                if decoder.buffered_len() > 2 * 65_536 {
                    warn!(%peer, "ICE-TCP: framing lost; closing");
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    deliver(TcpInput::Closed(peer));
}
