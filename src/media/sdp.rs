//! Just enough SDP reading for signaling: each media section's kind, `mid`, `msid` track id and
//! simulcast `rid`s. The engine validates SDP for real; this never panics on junk.

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    /// `a=mid:`.
    pub mid: Option<String>,
    /// The track id of `a=msid:<stream> <track>`.
    pub msid_track: Option<String>,
    /// `a=rid:<id> send|recv`, in order.
    pub rids: Vec<String>,
}

/// The media sections of an SDP, in order.
pub fn sections(sdp: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            out.push(Section {
                kind: rest.split(' ').next().unwrap_or("").to_owned(),
                ..Section::default()
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            section.msid_track = msid.split_whitespace().nth(1).map(str::to_owned);
        } else if let Some(rid) = line.strip_prefix("a=rid:") {
            if let Some(id) = rid.split_whitespace().next() {
                section.rids.push(id.to_owned());
            }
        }
    }
    out
}

/// The simulcast layer index of a `rid`: browsers name layers `q`/`h`/`f` (quarter, half,
/// full) or `l`/`m`/`h`, or `0`/`1`/`2`; otherwise the position among the section's rids.
pub fn layer_of(rid: &str, rids: &[String]) -> u8 {
    match rid {
        "q" | "l" | "0" | "low" => 0,
        "h" if rids.iter().any(|r| r == "q") => 1,
        "m" | "1" | "mid" => 1,
        "f" | "2" | "high" => 2,
        "h" => 2,
        _ => rids
            .iter()
            .position(|r| r == rid)
            .map_or(0, |p| p.min(2) as u8),
    }
}

/// The RFC 6464 audio-level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The id an `a=extmap:<id>[/<direction>] <uri>` line gives `uri` (1..=14, one-byte headers),
/// in the first section that maps it.
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end_matches('\r').strip_prefix("a=extmap:")?;
        let mut parts = rest.split_whitespace();
        let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
        (parts.next()? == uri && (1..=14).contains(&id)).then_some(id)
    })
}

/// Our subscribe offer as sent to the client: `a=setup:active` instead of `actpass`, so the
/// client answers `passive` and we are the DTLS client. Our ClientHello then leaves the moment
/// our ICE agent selects the pair, instead of the browser's: the core drops the browser's
/// first ClientHello while no pair is selected, and Chrome backs off (50 ms doubling) before
/// it retries. The local description keeps `actpass`; the core takes its role from the
/// answer's `passive`. (RFC 8842 asks offerers for `actpass`; `active` is valid SDP and
/// browsers answer it with `passive`.)
pub fn offer_as_dtls_client(sdp: &str) -> String {
    sdp.replace("a=setup:actpass", "a=setup:active")
}

/// Our answer to a publisher as sent: `x-google-start-bitrate=<kbps>` on every VP8 payload
/// type (added to its `a=fmtp` line, or as a new one after its `a=rtpmap`), so a browser's
/// congestion control starts high enough for every simulcast layer.
pub fn with_start_bitrate(sdp: &str, kbps: u32) -> String {
    let vp8: Vec<String> = sdp
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').strip_prefix("a=rtpmap:")?;
            let (pt, codec) = rest.split_once(' ')?;
            codec
                .to_ascii_uppercase()
                .starts_with("VP8/")
                .then(|| pt.to_owned())
        })
        .collect();
    if vp8.is_empty() {
        return sdp.to_owned();
    }
    let param = format!("x-google-start-bitrate={kbps}");
    let has_fmtp = |pt: &str| sdp.lines().any(|l| l.starts_with(&format!("a=fmtp:{pt} ")));
    let mut out = String::with_capacity(sdp.len() + 64 * vp8.len());
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        let eol = &line[bare.len()..];
        let fmtp_pt = bare
            .strip_prefix("a=fmtp:")
            .and_then(|r| r.split_once(' '))
            .map(|(pt, _)| pt);
        match fmtp_pt {
            Some(pt) if vp8.iter().any(|v| v == pt) => {
                out.push_str(bare);
                out.push(';');
                out.push_str(&param);
                out.push_str(eol);
            }
            _ => out.push_str(line),
        }
        let rtpmap_pt = bare
            .strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_once(' '))
            .map(|(pt, _)| pt);
        if let Some(pt) = rtpmap_pt {
            if vp8.iter().any(|v| v == pt) && !has_fmtp(pt) {
                out.push_str(&format!("a=fmtp:{pt} {param}"));
                out.push_str(if eol.is_empty() { "\r\n" } else { eol });
            }
        }
    }
    out
}

/// The first `a=ice-ufrag:` value (session or media level; with BUNDLE they are all one).
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_ufrag_is_the_first_one() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:AbCd\r\na=ice-pwd:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:AbCd\r\n";
        assert_eq!(ice_ufrag(sdp).as_deref(), Some("AbCd"));
        assert_eq!(ice_ufrag("v=0\r\na=ice-ufrag:\r\n"), None);
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    #[test]
    fn subscribe_offers_make_us_the_dtls_client() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\n";
        assert_eq!(
            offer_as_dtls_client(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:active\r\n"
        );
    }

    #[test]
    fn the_start_bitrate_goes_on_every_vp8_payload_type_and_nowhere_else() {
        let sdp = "m=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\nm=video 9 X 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 vp8/90000\r\na=fmtp:97 foo=1\r\n";
        let out = with_start_bitrate(sdp, 2000);
        assert!(out.contains("a=fmtp:111 minptime=10\r\n"), "{out}");
        assert!(
            out.contains("a=rtpmap:96 VP8/90000\r\na=fmtp:96 x-google-start-bitrate=2000\r\n"),
            "{out}"
        );
        assert!(
            out.contains("a=fmtp:97 foo=1;x-google-start-bitrate=2000\r\n"),
            "{out}"
        );
        assert_eq!(
            with_start_bitrate("m=audio 9 X 111\r\n", 1),
            "m=audio 9 X 111\r\n"
        );
        assert_eq!(with_start_bitrate("junk", 1), "junk");
    }

    #[test]
    fn extmap_ids_are_found_and_junk_is_not() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:1 urn:x\r\na=extmap:3/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(extmap_id(sdp, AUDIO_LEVEL_URI), Some(3));
        assert_eq!(extmap_id(sdp, "urn:none"), None);
        assert_eq!(
            extmap_id(
                "a=extmap:x urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                AUDIO_LEVEL_URI
            ),
            None
        );
        assert_eq!(
            extmap_id(
                "a=extmap:15 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                AUDIO_LEVEL_URI
            ),
            None
        );
        assert_eq!(extmap_id("a=extmap:", AUDIO_LEVEL_URI), None);
    }

    #[test]
    fn reads_sections_mids_msids_and_rids() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s1 mic-1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s1 cam-1\r\n\
            a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n";
        let s = sections(sdp);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, "audio");
        assert_eq!(s[0].mid.as_deref(), Some("0"));
        assert_eq!(s[0].msid_track.as_deref(), Some("mic-1"));
        assert_eq!(s[1].rids, vec!["q", "h", "f"]);
        assert_eq!(layer_of("q", &s[1].rids), 0);
        assert_eq!(layer_of("h", &s[1].rids), 1);
        assert_eq!(layer_of("f", &s[1].rids), 2);
        let lmh: Vec<String> = ["l", "m", "h"].iter().map(|s| s.to_string()).collect();
        assert_eq!(layer_of("h", &lmh), 2);
    }

    #[test]
    fn junk_does_not_panic() {
        assert!(sections("").is_empty());
        assert!(sections("a=mid:0\nm=\na=msid:\na=rid:\n").len() == 1);
        let _ = sections(&"m=video x\na=rid:🙂 send\n".repeat(100));
    }
}
