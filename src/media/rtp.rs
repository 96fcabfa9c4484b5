//! Small, allocation-free readers of RTP payloads and header extensions the router needs:
//! whether a VP8 packet starts a keyframe (RFC 7741) and the audio level of an Opus packet
//! (RFC 6464). They never panic on short or hostile input.

/// Whether a VP8 RTP payload starts a keyframe.
///
/// RFC 7741 §4.2/4.3: the payload descriptor (1 byte, plus optional extension bytes) is
/// followed by the VP8 payload header, whose first byte's bit 0 (P) is 0 for a keyframe. Only
/// the first packet of a frame has the header: it has the S bit set and partition id 0.
pub fn vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits (M bit).
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            // L: TL0PICIDX.
            i += 1;
        }
        if x & 0x30 != 0 {
            // T or K: TID/Y/KEYIDX byte.
            i += 1;
        }
    }
    payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// The audio level of an RFC 6464 one-byte extension element: `(voice_activity, level)` where
/// level is 0..=127 in -dBov (0 is loudest, 127 silence).
pub fn audio_level(element: &[u8]) -> Option<(bool, u8)> {
    let b = *element.first()?;
    Some((b & 0x80 != 0, b & 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_recognised() {
        // S=1, PID=0, no extension; payload header P=0: keyframe.
        assert!(vp8_keyframe(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same, P=1: interframe.
        assert!(!vp8_keyframe(&[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!vp8_keyframe(&[0x00, 0x00]));
        // Partition 1.
        assert!(!vp8_keyframe(&[0x11, 0x00]));
        // Extended: I with a 15-bit PictureID, then the header.
        assert!(vp8_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!vp8_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x01]));
        // Extended: I (7-bit), L and T/K.
        assert!(vp8_keyframe(&[0x90, 0xe0, 0x05, 0x07, 0x20, 0x00]));
    }

    #[test]
    fn short_or_hostile_payloads_are_not_keyframes_and_do_not_panic() {
        assert!(!vp8_keyframe(&[]));
        assert!(!vp8_keyframe(&[0x10]));
        assert!(!vp8_keyframe(&[0x90]));
        assert!(!vp8_keyframe(&[0x90, 0x80]));
        assert!(!vp8_keyframe(&[0x90, 0x80, 0x81]));
        for b in 0..=255u8 {
            let _ = vp8_keyframe(&[b, b, b]);
        }
    }

    #[test]
    fn audio_levels_are_read() {
        assert_eq!(audio_level(&[0x80 | 30]), Some((true, 30)));
        assert_eq!(audio_level(&[127]), Some((false, 127)));
        assert_eq!(audio_level(&[]), None);
    }
}
