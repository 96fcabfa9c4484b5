//! Signed invite tokens.
//!
//! An invite token carries [`Claims`] (which meeting, which role, who) and is
//! authenticated with HMAC-SHA256 under a server-side [`Secret`]:
//!
//! ```text
//! base64url_nopad(json(claims)) "." base64url_nopad(HMAC-SHA256(secret, first part))
//! ```
//!
//! [`verify`] checks the MAC in constant time *before* the payload is decoded
//! or parsed, so unauthenticated input never reaches the JSON parser. Error
//! values and their messages never contain the token or the secret.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Maximum accepted token length in bytes; longer input is rejected unread.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Minimum length (in bytes) of a secret taken from configuration or loaded
/// from disk.
pub const MIN_SECRET_LEN: usize = 16;

/// Length in bytes of secrets produced by [`Secret::generate`].
pub const GENERATED_SECRET_LEN: usize = 32;

/// Name of the secret file inside the data directory.
const SECRET_FILE: &str = "secret";

/// Maximum length of the name-derived part of a default participant id.
const MAX_SLUG_LEN: usize = 32;

/// Errors produced while loading secrets or verifying tokens.
///
/// Messages never include the token or secret material.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is not structurally valid (wrong shape, bad base64, bad JSON).
    #[error("invite token is malformed")]
    Malformed,
    /// The token's MAC does not match: forged, tampered or signed with another secret.
    #[error("invite token signature is invalid")]
    BadSignature,
    /// The token was authentic but its validity ended at `expired_at` (unix seconds).
    #[error("invite token expired at {expired_at} (unix seconds)")]
    Expired {
        /// The `expires_at` claim of the rejected token.
        expired_at: i64,
    },
    /// The token exceeds [`MAX_TOKEN_LEN`] bytes.
    #[error("invite token exceeds {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Reading or writing the secret file failed.
    #[error("secret file {}: {source}", path.display())]
    Io {
        /// Path of the file or directory involved.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The configured or stored secret is shorter than [`MIN_SECRET_LEN`].
    #[error("secret is too short: at least {MIN_SECRET_LEN} bytes required")]
    WeakSecret,
    /// The secret file exists but does not contain valid hex.
    #[error("secret file {} does not contain a hex-encoded secret", path.display())]
    CorruptSecret {
        /// Path of the offending file.
        path: PathBuf,
    },
}

impl AuthError {
    /// Stable machine-readable error code, suitable for API responses and logs.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Malformed => "token_malformed",
            AuthError::BadSignature => "token_forged",
            AuthError::Expired { .. } => "token_expired",
            AuthError::TooLong => "token_too_long",
            AuthError::Io { .. } => "secret_io",
            AuthError::WeakSecret => "secret_weak",
            AuthError::CorruptSecret { .. } => "secret_corrupt",
        }
    }
}

/// Roles are the wire protocol's: one definition for tokens and the meeting.
pub use roundtable_signaling::{ParseRoleError, Role};

/// The signed content of an invite token.
///
/// Serialized with short keys to keep tokens (and join URLs) compact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Meeting the invite is valid for.
    #[serde(rename = "m")]
    pub meeting: String,
    /// Role granted to the holder.
    #[serde(rename = "r")]
    pub role: Role,
    /// Stable participant id within the meeting.
    #[serde(rename = "p")]
    pub participant: String,
    /// Display name.
    #[serde(rename = "n")]
    pub name: String,
    /// Delegation (country, organisation, …) the participant belongs to.
    #[serde(rename = "d")]
    pub delegation: String,
    /// End of validity, unix seconds; the token is rejected at and after this instant.
    #[serde(rename = "x")]
    pub expires_at: i64,
    /// Short random id of this particular invite (for auditing / revocation).
    #[serde(rename = "i")]
    pub invite: String,
    /// The invite works once: its first connection redeems it, and later connections use
    /// the session token the server hands out in `welcome`.
    #[serde(rename = "o", default, skip_serializing_if = "std::ops::Not::not")]
    pub once: bool,
}

impl Claims {
    /// Whether these claims are expired at `now_unix` (unix seconds).
    pub fn is_expired(&self, now_unix: i64) -> bool {
        now_unix >= self.expires_at
    }
}

/// HMAC key used to sign and verify invite tokens.
///
/// Its [`Debug`] output never reveals the key material.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Uses the bytes of a configured secret string as the key.
    ///
    /// Returns [`AuthError::WeakSecret`] if it is shorter than
    /// [`MIN_SECRET_LEN`] characters.
    pub fn from_config(s: &str) -> Result<Secret, AuthError> {
        if s.chars().count() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Secret(s.as_bytes().to_vec()))
    }

    /// Generates a fresh random secret of [`GENERATED_SECRET_LEN`] bytes.
    pub fn generate() -> Secret {
        let mut bytes = vec![0u8; GENERATED_SECRET_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// Loads the hex-encoded secret from `data_dir/secret`, or, if that file
    /// does not exist, generates one, creates `data_dir` as needed and writes
    /// the file (mode `0600` on unix).
    ///
    /// If another process creates the file concurrently, its secret is used.
    pub fn load_or_create(data_dir: &Path) -> Result<Secret, AuthError> {
        let path = data_dir.join(SECRET_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => return Self::from_file_contents(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(AuthError::Io { path, source }),
        }

        fs::create_dir_all(data_dir).map_err(|source| AuthError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;

        let secret = Secret::generate();
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = match options.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Lost a creation race: use whatever the winner wrote.
                let text = fs::read_to_string(&path).map_err(|source| AuthError::Io {
                    path: path.clone(),
                    source,
                })?;
                return Self::from_file_contents(&text, &path);
            }
            Err(source) => return Err(AuthError::Io { path, source }),
        };

        let contents = format!("{}\n", hex_encode(&secret.0));
        if let Err(source) = file
            .write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
        {
            drop(file);
            // Do not leave a truncated secret behind; best effort.
            let _ = fs::remove_file(&path);
            return Err(AuthError::Io { path, source });
        }
        Ok(secret)
    }

    fn from_file_contents(text: &str, path: &Path) -> Result<Secret, AuthError> {
        let bytes = hex_decode(text.trim()).ok_or_else(|| AuthError::CorruptSecret {
            path: path.to_path_buf(),
        })?;
        if bytes.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        Ok(Secret(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Signs `claims`, producing a URL-safe token.
pub fn sign(secret: &Secret, claims: &Claims) -> String {
    // Claims contains only strings, integers and a unit enum: serialization
    // cannot fail.
    let json = serde_json::to_vec(claims).expect("Claims serialization is infallible");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let mut mac = secret.mac();
    mac.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// Verifies `token` and returns its claims if it is authentic and not expired
/// at `now_unix` (unix seconds).
///
/// Checks, in order: length ([`AuthError::TooLong`]), shape and base64
/// alphabet ([`AuthError::Malformed`]), MAC in constant time
/// ([`AuthError::BadSignature`]), payload decoding ([`AuthError::Malformed`]),
/// and expiry ([`AuthError::Expired`]).
pub fn verify(secret: &Secret, token: &str, now_unix: i64) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong);
    }
    let (payload, tag) = token.split_once('.').ok_or(AuthError::Malformed)?;
    if !is_base64url(payload) || !is_base64url(tag) {
        return Err(AuthError::Malformed);
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| AuthError::Malformed)?;

    let mut mac = secret.mac();
    mac.update(payload.as_bytes());
    mac.verify_slice(&tag)
        .map_err(|_| AuthError::BadSignature)?;

    // Authenticated from here on.
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if claims.is_expired(now_unix) {
        return Err(AuthError::Expired {
            expired_at: claims.expires_at,
        });
    }
    Ok(claims)
}

/// Builds claims for a new invite valid for `ttl_secs` seconds from `now_unix`.
///
/// If `participant` is `None`, the id is derived from `name`: a lowercase
/// ASCII slug (e.g. `"Amina K."` → `"amina-k"`), with a short random hex
/// suffix for delegates (`"amina-k-3f9a"`). An empty slug falls back to the
/// role name plus a suffix. The invite id is 8 random hex characters.
pub fn new_invite(
    meeting: &str,
    role: Role,
    participant: Option<&str>,
    name: &str,
    delegation: &str,
    ttl_secs: u64,
    now_unix: i64,
) -> Claims {
    let participant = match participant {
        Some(p) => p.to_owned(),
        None => {
            let slug = slugify(name);
            if slug.is_empty() {
                format!("{}-{}", role.as_str(), random_hex(2))
            } else if role == Role::Delegate {
                format!("{slug}-{}", random_hex(2))
            } else {
                slug
            }
        }
    };
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
    Claims {
        meeting: meeting.to_owned(),
        role,
        participant,
        name: name.to_owned(),
        delegation: delegation.to_owned(),
        expires_at: now_unix.saturating_add(ttl),
        invite: random_hex(4),
        once: false,
    }
}

/// Builds the join link `{base}/join?token={token}`; trailing slashes on
/// `base` are ignored. Tokens are URL-safe and need no escaping.
pub fn join_url(base: &str, token: &str) -> String {
    format!("{}/join?token={token}", base.trim_end_matches('/'))
}

/// Lowercase ASCII slug: alphanumerics kept, runs of anything else become a
/// single `-`, no leading/trailing `-`, at most [`MAX_SLUG_LEN`] characters.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    let mut pending_dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            let dash = pending_dash && !slug.is_empty();
            if slug.len() + usize::from(dash) + 1 > MAX_SLUG_LEN {
                break;
            }
            if dash {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    slug
}

fn is_base64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut bytes);
    hex_encode(&bytes)
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::from_config("correct horse battery staple").unwrap()
    }

    fn claims() -> Claims {
        new_invite(
            "plenary-2024",
            Role::Delegate,
            None,
            "Amina K.",
            "Kenya",
            3600,
            NOW,
        )
    }

    /// Re-encodes one part of a token after flipping a bit of its decoded bytes.
    fn flip_bit(part: &str, byte: usize) -> String {
        let mut raw = URL_SAFE_NO_PAD.decode(part).unwrap();
        raw[byte] ^= 0x01;
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "roundtable-auth-{tag}-{}-{}",
            std::process::id(),
            random_hex(4)
        ))
    }

    #[test]
    fn round_trip() {
        let s = secret();
        let c = claims();
        let token = sign(&s, &c);
        assert_eq!(token.matches('.').count(), 1);
        assert_eq!(verify(&s, &token, NOW).unwrap(), c);
        assert_eq!(verify(&s, &token, NOW + 3599).unwrap(), c);
    }

    #[test]
    fn flipped_payload_bit_is_forged() {
        let s = secret();
        let token = sign(&s, &claims());
        let (payload, tag) = token.split_once('.').unwrap();
        for i in [0, 5, 20] {
            let forged = format!("{}.{tag}", flip_bit(payload, i));
            let err = verify(&s, &forged, NOW).unwrap_err();
            assert!(matches!(err, AuthError::BadSignature), "{err:?}");
            assert_eq!(err.code(), "token_forged");
        }
    }

    #[test]
    fn flipped_mac_bit_is_forged() {
        let s = secret();
        let token = sign(&s, &claims());
        let (payload, tag) = token.split_once('.').unwrap();
        for i in [0, 16, 31] {
            let forged = format!("{payload}.{}", flip_bit(tag, i));
            assert!(matches!(
                verify(&s, &forged, NOW),
                Err(AuthError::BadSignature)
            ));
        }
        // Truncated MAC is also rejected as a bad signature.
        let short = format!("{payload}.{}", &tag[..8]);
        assert!(matches!(
            verify(&s, &short, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn wrong_secret_is_forged() {
        let token = sign(&secret(), &claims());
        let other = Secret::generate();
        assert!(matches!(
            verify(&other, &token, NOW),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn expired_token() {
        let s = secret();
        let c = claims();
        let token = sign(&s, &c);
        let err = verify(&s, &token, NOW + 3600).unwrap_err();
        match err {
            AuthError::Expired { expired_at } => assert_eq!(expired_at, NOW + 3600),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), "token_expired");
        assert!(matches!(
            verify(&s, &token, NOW + 100_000),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn malformed_tokens() {
        let s = secret();
        let token = sign(&s, &claims());
        let (payload, tag) = token.split_once('.').unwrap();
        let cases = [
            String::new(),
            "garbage".to_owned(),
            "no-dot-here".to_owned(),
            ".".to_owned(),
            format!("{payload}."),
            format!(".{tag}"),
            format!("{payload}.{tag}.extra"),
            format!("{payload}.{tag}="),
            format!("{payload}!.{tag}"),
            format!("{payload}.{tag} "),
            "a+b/c.d+e/f".to_owned(),
            "héllo.wörld".to_owned(),
            // Valid alphabet but impossible base64 length for the MAC.
            format!("{payload}.A"),
        ];
        for case in &cases {
            let err = verify(&s, case, NOW).unwrap_err();
            assert!(matches!(err, AuthError::Malformed), "{case:?}: {err:?}");
            assert_eq!(err.code(), "token_malformed");
        }
    }

    #[test]
    fn authentic_but_unparseable_payload_is_malformed() {
        let s = secret();
        for body in [&b"not json"[..], b"{}", b"{\"m\":1}"] {
            let payload = URL_SAFE_NO_PAD.encode(body);
            let mut mac = s.mac();
            mac.update(payload.as_bytes());
            let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            assert!(matches!(
                verify(&s, &format!("{payload}.{tag}"), NOW),
                Err(AuthError::Malformed)
            ));
        }
    }

    #[test]
    fn huge_token_is_too_long() {
        let s = secret();
        let huge = "A".repeat(MAX_TOKEN_LEN + 1);
        let err = verify(&s, &huge, NOW).unwrap_err();
        assert!(matches!(err, AuthError::TooLong));
        assert_eq!(err.code(), "token_too_long");
        let huge_dotted = format!("{}.{}", "A".repeat(3000), "B".repeat(3000));
        assert!(matches!(
            verify(&s, &huge_dotted, NOW),
            Err(AuthError::TooLong)
        ));
    }

    #[test]
    fn errors_do_not_leak_token_or_secret() {
        let s = secret();
        let token = sign(&s, &claims());
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", flip_bit(payload, 3));
        for t in [forged.as_str(), "zzz", &token] {
            if let Err(e) = verify(&s, t, NOW + 10_000) {
                let msg = format!("{e} {e:?}");
                assert!(!msg.contains(payload) && !msg.contains(tag));
                assert!(!msg.contains("horse"));
            }
        }
    }

    #[test]
    fn weak_config_secret_rejected() {
        let err = Secret::from_config("short").unwrap_err();
        assert!(matches!(err, AuthError::WeakSecret));
        assert_eq!(err.code(), "secret_weak");
        assert!(Secret::from_config("exactly-16-chars").is_ok());
    }

    #[test]
    fn debug_hides_secret() {
        let s = Secret::from_config("super-secret-value-1234").unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("super"), "{dbg}");
        assert!(!dbg.contains("73757065"), "{dbg}"); // hex of "supe"
        let generated = Secret::generate();
        let dbg = format!("{generated:?}");
        assert!(!dbg.contains(&hex_encode(&generated.0)));
        assert!(!dbg.contains(&format!("{:?}", generated.0)));
    }

    #[test]
    fn load_or_create_persists_secret() {
        let dir = temp_dir("persist").join("nested");
        let first = Secret::load_or_create(&dir).unwrap();
        assert_eq!(first.0.len(), GENERATED_SECRET_LEN);
        let path = dir.join(SECRET_FILE);
        assert!(path.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = Secret::load_or_create(&dir).unwrap();
        assert_eq!(first.0, second.0);
        // Tokens signed before a restart still verify after it.
        let token = sign(&first, &claims());
        assert!(verify(&second, &token, NOW).is_ok());
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn load_or_create_rejects_bad_files() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SECRET_FILE);

        fs::write(&path, "not hex at all\n").unwrap();
        let err = Secret::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, AuthError::CorruptSecret { .. }));
        assert_eq!(err.code(), "secret_corrupt");

        fs::write(&path, "abcd\n").unwrap();
        assert!(matches!(
            Secret::load_or_create(&dir),
            Err(AuthError::WeakSecret)
        ));

        let hex = "00112233445566778899AABBCCDDEEFF";
        fs::write(&path, format!("  {hex}\n")).unwrap();
        let s = Secret::load_or_create(&dir).unwrap();
        assert_eq!(s.0, hex_decode(hex).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_or_create_reports_io_errors() {
        let dir = temp_dir("io");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // A regular file where the data directory should be.
        fs::write(&dir, "x").unwrap();
        let err = Secret::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, AuthError::Io { .. }), "{err:?}");
        assert_eq!(err.code(), "secret_io");
        fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn role_names() {
        assert_eq!(Role::ALL.len(), 6);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), r);
        }
        assert_eq!(" Moderator ".parse::<Role>().unwrap(), Role::Moderator);
        let err = "chair".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("chair"), "{err}");
        for r in Role::ALL {
            assert!(err.contains(r.as_str()), "{err}");
        }
    }

    #[test]
    fn new_invite_defaults() {
        let c = claims();
        assert_eq!(c.meeting, "plenary-2024");
        assert_eq!(c.role, Role::Delegate);
        assert_eq!(c.name, "Amina K.");
        assert_eq!(c.delegation, "Kenya");
        assert_eq!(c.expires_at, NOW + 3600);
        let suffix = c.participant.strip_prefix("amina-k-").unwrap();
        assert_eq!(suffix.len(), 4);
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c.invite.len(), 8);
        assert!(c.invite.bytes().all(|b| b.is_ascii_hexdigit()));

        let m = new_invite(
            "m",
            Role::Moderator,
            None,
            "  Dr. Jean-Luc  Picard ",
            "",
            60,
            NOW,
        );
        assert_eq!(m.participant, "dr-jean-luc-picard");
        let given = new_invite("m", Role::Delegate, Some("p-42"), "X", "", 60, NOW);
        assert_eq!(given.participant, "p-42");
        let anon = new_invite("m", Role::Room, None, "会议室", "", 60, NOW);
        assert!(
            anon.participant.starts_with("room-"),
            "{}",
            anon.participant
        );
        let forever = new_invite("m", Role::Observer, None, "o", "", u64::MAX, NOW);
        assert_eq!(forever.expires_at, i64::MAX);
    }

    #[test]
    fn slug_is_bounded() {
        let slug = slugify(&"ab ".repeat(100));
        assert!(slug.len() <= MAX_SLUG_LEN);
        assert!(!slug.ends_with('-') && !slug.starts_with('-'));
    }

    #[test]
    fn join_url_formats() {
        assert_eq!(
            join_url("https://rt.example.org", "a.b"),
            "https://rt.example.org/join?token=a.b"
        );
        assert_eq!(
            join_url("https://rt.example.org/", "a.b"),
            "https://rt.example.org/join?token=a.b"
        );
    }

    #[test]
    fn claims_use_short_keys() {
        let json = serde_json::to_value(claims()).unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["d", "i", "m", "n", "p", "r", "x"]);
    }
}
