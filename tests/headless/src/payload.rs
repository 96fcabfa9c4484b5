//! Synthetic payloads: what the pump sends and the receivers parse.
//!
//! Every packet carries, right after its codec header bytes, a 20-byte [`Mark`]: the magic
//! `RTHL`, the [stream tag](stream_tag) of the stream it belongs to, our own sequence number
//! (per stream, from 0, independent of RTP's) and the send time in microseconds since the UNIX
//! epoch. Sender and receiver run on one machine, so `receive time - sent_us` is the one-way
//! delay through everything in between.
//!
//! - Opus: one TOC byte (`0x78`: hybrid, full band, 20 ms, mono, one frame), then the mark.
//! - VP8 (RFC 7741): a 4-byte payload descriptor (X=1, N=0, S on the first packet of a frame,
//!   PID=0; I=1 with a 15-bit PictureID), then on the first packet of a frame the VP8 payload
//!   header (3 bytes, 10 on a keyframe: the frame tag with P=0, the start code `9d 01 2a` and
//!   the size), then the mark. An SFU detects a keyframe exactly as it does for a browser: S=1,
//!   PID=0 and P=0 in the first byte of the payload header.
//!
//! The rest of the payload is filler up to the requested size.

/// The four bytes that open a [`Mark`].
pub const MAGIC: [u8; 4] = *b"RTHL";
/// Length of an encoded [`Mark`].
pub const MARK_LEN: usize = 20;
/// The Opus TOC byte we send.
pub const OPUS_TOC: u8 = 0x78;
/// Length of the VP8 payload descriptor we send.
pub const VP8_DESCRIPTOR_LEN: usize = 4;
/// Length of the VP8 payload header on a keyframe (frame tag, start code, width, height).
pub const VP8_KEYFRAME_HEADER_LEN: usize = 10;
/// Length of the VP8 payload header on an interframe (frame tag).
pub const VP8_INTERFRAME_HEADER_LEN: usize = 3;

/// What the headless client writes into each payload after the codec header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Which stream sent it ([`stream_tag`]).
    pub stream: u32,
    /// The stream's own sequence number, from 0, one per packet.
    pub seq: u32,
    /// Send time, microseconds since the UNIX epoch.
    pub sent_us: u64,
}

impl Mark {
    /// Writes the mark into the first [`MARK_LEN`] bytes of `buf` (which must be that long).
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4..8].copy_from_slice(&self.stream.to_be_bytes());
        buf[8..12].copy_from_slice(&self.seq.to_be_bytes());
        buf[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
    }

    /// Reads a mark from the start of `buf`: `None` if it is too short or lacks the magic.
    pub fn read(buf: &[u8]) -> Option<Mark> {
        let b = buf.get(..MARK_LEN)?;
        if b[0..4] != MAGIC {
            return None;
        }
        Some(Mark {
            stream: u32::from_be_bytes(b[4..8].try_into().ok()?),
            seq: u32::from_be_bytes(b[8..12].try_into().ok()?),
            sent_us: u64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// Which of a participant's streams a packet belongs to (the low byte of a [`stream_tag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// Microphone or the room's audio mix.
    Audio,
    /// Camera (or room camera) layer: 0 = `q`, 1 = `h`, 2 = `f`. A single-layer camera is 2.
    Video(u8),
    /// Screen share.
    Screen,
}

impl StreamKind {
    fn code(self) -> u32 {
        match self {
            StreamKind::Audio => 0,
            StreamKind::Video(layer) => 1 + u32::from(layer.min(2)),
            StreamKind::Screen => 4,
        }
    }

    fn from_code(code: u32) -> Option<StreamKind> {
        match code {
            0 => Some(StreamKind::Audio),
            1..=3 => Some(StreamKind::Video((code - 1) as u8)),
            4 => Some(StreamKind::Screen),
            _ => None,
        }
    }
}

/// The stream tag written into every [`Mark`]: the upper 24 bits are a hash (FNV-1a) of the
/// sending participant's id, the low byte says which stream. Receivers compare tags to tell
/// publishers and layers apart, e.g. across a speaker switch or a simulcast layer switch.
pub fn stream_tag(participant: &str, kind: StreamKind) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in participant.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h << 8) | kind.code()
}

/// The stream kind encoded in a tag's low byte.
pub fn tag_kind(tag: u32) -> Option<StreamKind> {
    StreamKind::from_code(tag & 0xff)
}

/// A parsed VP8 payload descriptor (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: the first packet of a VP8 partition.
    pub start: bool,
    /// PID: the partition index.
    pub partition: u8,
    /// The PictureID, if present (7 or 15 bits).
    pub picture_id: Option<u16>,
    /// Descriptor length in bytes; the VP8 payload starts here.
    pub len: usize,
}

/// Parses a VP8 payload descriptor, including all optional fields (I, L, T, K).
pub fn parse_vp8_descriptor(payload: &[u8]) -> Option<Vp8Descriptor> {
    let b0 = *payload.first()?;
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    let mut len = 1;
    let mut picture_id = None;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        len = 2;
        if x & 0x80 != 0 {
            let p = *payload.get(len)?;
            if p & 0x80 != 0 {
                let p2 = *payload.get(len + 1)?;
                picture_id = Some((u16::from(p & 0x7f) << 8) | u16::from(p2));
                len += 2;
            } else {
                picture_id = Some(u16::from(p));
                len += 1;
            }
        }
        if x & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
    }
    if payload.len() < len {
        return None;
    }
    Some(Vp8Descriptor {
        start,
        partition,
        picture_id,
        len,
    })
}

/// Whether a VP8 RTP payload starts a keyframe: S=1, PID=0 and the frame tag's P bit is 0.
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    match parse_vp8_descriptor(payload) {
        Some(d) if d.start && d.partition == 0 => payload
            .get(d.len)
            .is_some_and(|frame_tag| frame_tag & 0x01 == 0),
        _ => false,
    }
}

/// Where the [`Mark`] sits in a VP8 payload we built (`None` if the payload is not ours).
fn vp8_mark_offset(payload: &[u8]) -> Option<usize> {
    let d = parse_vp8_descriptor(payload)?;
    if d.start && d.partition == 0 {
        let tag = *payload.get(d.len)?;
        let header = if tag & 0x01 == 0 {
            VP8_KEYFRAME_HEADER_LEN
        } else {
            VP8_INTERFRAME_HEADER_LEN
        };
        Some(d.len + header)
    } else {
        Some(d.len)
    }
}

/// One packet of a synthetic VP8 frame.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Packet {
    /// First packet of the frame (S=1 and the VP8 payload header follow).
    pub start: bool,
    /// The frame is a keyframe (only meaningful with `start`).
    pub keyframe: bool,
    /// 15-bit PictureID (one per frame).
    pub picture_id: u16,
    /// Width and height written into a keyframe's header.
    pub size: (u16, u16),
    /// The mark.
    pub mark: Mark,
    /// Total payload length (at least the headers and the mark).
    pub len: usize,
}

/// Builds a VP8 RTP payload.
pub fn vp8_payload(p: &Vp8Packet) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len.max(VP8_DESCRIPTOR_LEN + 10 + MARK_LEN));
    let pid = p.picture_id & 0x7fff;
    out.push(0x80 | if p.start { 0x10 } else { 0 }); // X=1, S, PID=0
    out.push(0x80); // I=1
    out.push(0x80 | (pid >> 8) as u8); // M=1: 15-bit PictureID
    out.push((pid & 0xff) as u8);
    if p.start {
        // Frame tag: P (bit 0, 0 = keyframe), version 0, show_frame 1, first partition size.
        let first_partition: u32 = 200;
        let tag = (first_partition << 5) | (1 << 4) | u32::from(!p.keyframe);
        out.extend_from_slice(&[tag as u8, (tag >> 8) as u8, (tag >> 16) as u8]);
        if p.keyframe {
            out.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            out.extend_from_slice(&(p.size.0 & 0x3fff).to_le_bytes());
            out.extend_from_slice(&(p.size.1 & 0x3fff).to_le_bytes());
        }
    }
    let at = out.len();
    out.resize(at + MARK_LEN, 0);
    p.mark.write(&mut out[at..]);
    fill(&mut out, p.len);
    out
}

/// Builds an Opus RTP payload of `len` bytes (at least 1 + [`MARK_LEN`]).
pub fn opus_payload(mark: Mark, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(1 + MARK_LEN));
    out.push(OPUS_TOC);
    out.resize(1 + MARK_LEN, 0);
    mark.write(&mut out[1..]);
    fill(&mut out, len);
    out
}

fn fill(out: &mut Vec<u8>, len: usize) {
    let mut x: u8 = 0x5a;
    while out.len() < len {
        out.push(x);
        x = x.wrapping_mul(31).wrapping_add(7);
    }
}

/// The codec family of a track, for parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Opus: TOC byte, then the mark.
    Opus,
    /// VP8: descriptor (+ payload header), then the mark.
    Vp8,
}

/// What a receiver learns from one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Our mark, if the payload carries one.
    pub mark: Option<Mark>,
    /// The payload starts a VP8 keyframe.
    pub keyframe: bool,
}

/// Parses a payload of the given codec.
pub fn parse(codec: Codec, payload: &[u8]) -> Parsed {
    match codec {
        Codec::Opus => Parsed {
            mark: payload.get(1..).and_then(Mark::read),
            keyframe: false,
        },
        Codec::Vp8 => Parsed {
            mark: vp8_mark_offset(payload)
                .and_then(|at| payload.get(at..))
                .and_then(Mark::read),
            keyframe: is_vp8_keyframe(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u32) -> Mark {
        Mark {
            stream: stream_tag("elif-yilmaz", StreamKind::Video(1)),
            seq,
            sent_us: 1_792_994_400_123_456,
        }
    }

    #[test]
    fn mark_round_trips_and_needs_the_magic() {
        let m = mark(u32::MAX - 1);
        let mut buf = [0u8; MARK_LEN + 3];
        m.write(&mut buf);
        assert_eq!(Mark::read(&buf), Some(m));
        assert_eq!(Mark::read(&buf[..MARK_LEN - 1]), None, "too short");
        buf[0] = b'X';
        assert_eq!(Mark::read(&buf), None, "no magic");
    }

    #[test]
    fn stream_tags_name_participant_and_stream() {
        let a = stream_tag("room", StreamKind::Audio);
        let q = stream_tag("room", StreamKind::Video(0));
        let f = stream_tag("room", StreamKind::Video(2));
        let s = stream_tag("room", StreamKind::Screen);
        let other = stream_tag("delegate-1", StreamKind::Audio);
        assert_eq!(a >> 8, q >> 8);
        assert_ne!(a, other);
        assert_eq!(tag_kind(a), Some(StreamKind::Audio));
        assert_eq!(tag_kind(q), Some(StreamKind::Video(0)));
        assert_eq!(tag_kind(f), Some(StreamKind::Video(2)));
        assert_eq!(tag_kind(s), Some(StreamKind::Screen));
        assert_eq!(
            stream_tag("x", StreamKind::Video(9)),
            stream_tag("x", StreamKind::Video(2))
        );
    }

    #[test]
    fn opus_payload_has_toc_mark_and_size() {
        for len in [10, 80, 160] {
            let p = opus_payload(mark(7), len);
            assert_eq!(p.len(), len.max(1 + MARK_LEN));
            assert_eq!(p[0], OPUS_TOC);
            let parsed = parse(Codec::Opus, &p);
            assert_eq!(parsed.mark, Some(mark(7)));
            assert!(!parsed.keyframe);
        }
    }

    fn packet(start: bool, keyframe: bool, len: usize) -> Vec<u8> {
        vp8_payload(&Vp8Packet {
            start,
            keyframe,
            picture_id: 0x1234,
            size: (1280, 720),
            mark: mark(42),
            len,
        })
    }

    #[test]
    fn vp8_keyframe_is_marked_like_a_browser_marks_it() {
        let p = packet(true, true, 1100);
        assert_eq!(p.len(), 1100);
        // Descriptor: X=1, S=1, PID=0; I=1; M=1 + 15-bit PictureID.
        assert_eq!(&p[..4], &[0x90, 0x80, 0x92, 0x34]);
        // Frame tag P bit 0, show_frame 1; start code; 1280x720 little-endian.
        assert_eq!(p[4] & 0x01, 0, "P=0 on a keyframe");
        assert_eq!(p[4] & 0x10, 0x10, "show_frame");
        assert_eq!(&p[7..10], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([p[10], p[11]]), 1280);
        assert_eq!(u16::from_le_bytes([p[12], p[13]]), 720);
        let d = parse_vp8_descriptor(&p).unwrap();
        assert_eq!(
            d,
            Vp8Descriptor {
                start: true,
                partition: 0,
                picture_id: Some(0x1234),
                len: 4
            }
        );
        assert!(is_vp8_keyframe(&p));
        let parsed = parse(Codec::Vp8, &p);
        assert_eq!(parsed.mark, Some(mark(42)));
        assert!(parsed.keyframe);
    }

    #[test]
    fn vp8_interframe_and_continuation_are_not_keyframes() {
        let inter = packet(true, false, 1100);
        assert_eq!(inter[0], 0x90);
        assert_eq!(inter[4] & 0x01, 1, "P=1 on an interframe");
        assert!(!is_vp8_keyframe(&inter));
        assert_eq!(parse(Codec::Vp8, &inter).mark, Some(mark(42)));

        // A keyframe's second packet: S=0, so not a keyframe start even though the frame is one.
        let cont = packet(false, true, 1100);
        assert_eq!(cont[0], 0x80);
        assert!(!is_vp8_keyframe(&cont));
        let parsed = parse(Codec::Vp8, &cont);
        assert_eq!(parsed.mark, Some(mark(42)));
        assert!(!parsed.keyframe);
    }

    #[test]
    fn vp8_descriptor_parses_every_optional_field() {
        // Minimal: no X.
        let d = parse_vp8_descriptor(&[0x10, 0x00]).unwrap();
        assert_eq!(
            (d.start, d.partition, d.picture_id, d.len),
            (true, 0, None, 1)
        );
        assert!(is_vp8_keyframe(&[0x10, 0x00]));
        assert!(
            !is_vp8_keyframe(&[0x11, 0x00]),
            "PID 1 is not the frame start"
        );
        // X with I (7-bit), L, T: 1 + 1 + 1 + 1 + 1.
        let d = parse_vp8_descriptor(&[0x90, 0xe0, 0x05, 0x07, 0x40, 0x00]).unwrap();
        assert_eq!((d.picture_id, d.len), (Some(5), 5));
        assert!(is_vp8_keyframe(&[0x90, 0xe0, 0x05, 0x07, 0x40, 0x00]));
        // K alone also adds the TID/KEYIDX byte.
        let d = parse_vp8_descriptor(&[0x80, 0x10, 0x00]).unwrap();
        assert_eq!(d.len, 3);
        // Truncated.
        assert_eq!(parse_vp8_descriptor(&[0x90, 0x80, 0x81]), None);
        assert_eq!(parse_vp8_descriptor(&[]), None);
        assert!(
            !is_vp8_keyframe(&[0x90, 0x80, 0x81, 0x00]),
            "no payload header"
        );
    }

    #[test]
    fn foreign_payloads_carry_no_mark() {
        assert_eq!(parse(Codec::Opus, &[0x78; 40]).mark, None);
        assert_eq!(parse(Codec::Vp8, &[0x10, 0x00, 0x00, 0x00]).mark, None);
        assert_eq!(parse(Codec::Vp8, &[]).mark, None);
    }
}
