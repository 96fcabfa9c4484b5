//! What the media side reads from the network before anything is authenticated: STUN (the
//! demultiplexer's ufrag), RTP header extensions (audio level) and VP8 payloads, and the SDP a
//! client sends (our helpers and the `rtc` parser behind `publish` / `subscribe_answer`).
//! None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// roundtable's own readers, the very files (std only).
#[allow(dead_code)]
#[path = "../../src/media/rtp.rs"]
mod rtp;
#[allow(dead_code)]
#[path = "../../src/media/sdp.rs"]
mod sdp;
#[allow(dead_code)]
#[path = "../../src/media/stun.rs"]
mod stun;

fuzz_target!(|data: &[u8]| {
    let _ = stun::is_stun(data);
    let _ = stun::stun_local_ufrag(data);
    let _ = rtp::audio_level(data);
    let _ = rtp::vp8_keyframe(data);
    let text = String::from_utf8_lossy(data);
    let sections = sdp::sections(&text);
    for s in &sections {
        for rid in &s.rids {
            let _ = sdp::layer_of(rid, &s.rids);
        }
    }
    let _ = sdp::extmap_id(&text, "urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    let _ = sdp::offer_as_dtls_client(&text);
    let _ = sdp::with_start_bitrate(&text, 2000);
    // rtc's SDP parser: what `RTCSessionDescription::offer` / `answer` run on a client's SDP.
    let mut cursor = std::io::Cursor::new(text.as_bytes());
    if let Ok(parsed) = rtc_sdp::SessionDescription::unmarshal(&mut cursor) {
        let _ = parsed.marshal();
    }
});
