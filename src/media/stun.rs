//! STUN, as far as the engine reads it itself: whether a datagram is STUN, and the local ufrag
//! of its USERNAME, which routes a connectivity check to its connection before the remote
//! address is known. Pure (no dependencies): it reads unauthenticated network input, and the
//! `media_input` fuzz target includes this file as it is.

/// Whether a datagram is a STUN message (RFC 5389 magic cookie), as the demultiplexer tells
/// ICE from DTLS and RTP on the shared port.
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// The local ufrag of a STUN message's USERNAME attribute ("ours:theirs"), without allocating.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&[u8]> {
    const USERNAME: u16 = 0x0006;
    if !is_stun(data) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let end = (20 + len).min(data.len());
    let mut at = 20;
    while at + 4 <= end {
        let typ = u16::from_be_bytes([data[at], data[at + 1]]);
        let vlen = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let value = at + 4;
        if value + vlen > end {
            return None;
        }
        if typ == USERNAME {
            let username = &data[value..value + vlen];
            let local = username
                .iter()
                .position(|&b| b == b':')
                .map_or(username, |colon| &username[..colon]);
            return Some(local);
        }
        at = value + vlen.div_ceil(4) * 4;
    }
    None
}
