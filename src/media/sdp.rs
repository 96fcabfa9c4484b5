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

#[cfg(test)]
mod tests {
    use super::*;

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
