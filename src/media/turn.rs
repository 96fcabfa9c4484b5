//! TURN credentials for clients, by the TURN REST scheme that coturn implements as
//! `use-auth-secret`: the username is `<expiry unix seconds>:<participant>`, the password is
//! base64(HMAC-SHA1(shared secret, username)). coturn checks the MAC with the same secret and
//! refuses the credential after the expiry, so a leaked credential dies on its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

pub use roundtable_signaling::IceServer;

/// Mints `(username, password)` valid until `now_unix + ttl_secs`.
pub fn credentials(
    secret: &str,
    participant: &str,
    now_unix: i64,
    ttl_secs: u32,
) -> (String, String) {
    let username = format!("{}:{participant}", now_unix + i64::from(ttl_secs));
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return (username, String::new()),
    };
    mac.update(username.as_bytes());
    let password = STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The ICE servers for one participant: the STUN URLs as they are, the TURN URLs with freshly
/// minted credentials.
pub fn ice_servers(
    config: &crate::config::MediaConfig,
    participant: &str,
    now_unix: i64,
) -> Vec<IceServer> {
    let mut out = Vec::new();
    if !config.stun_urls.is_empty() {
        out.push(IceServer {
            urls: config.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if !config.turn_urls.is_empty() {
        let (u, p) = credentials(
            &config.turn_secret,
            participant,
            now_unix,
            config.turn_ttl_secs,
        );
        out.push(IceServer {
            urls: config.turn_urls.clone(),
            username: Some(u),
            credential: Some(p),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_turn_rest_scheme() {
        // Reference computed independently:
        // printf '%s' '1700086400:amina' | openssl dgst -sha1 -hmac 'north-wind-0123456789' -binary | base64
        let (u, p) = credentials("north-wind-0123456789", "amina", 1_700_000_000, 86_400);
        assert_eq!(u, "1700086400:amina");
        assert_eq!(p, REFERENCE);
    }

    const REFERENCE: &str = "KiWwsTZyp/h6wJyzibZbNX+ICQM=";

    #[test]
    fn ice_servers_carry_stun_as_is_and_turn_with_credentials() {
        let mut c = crate::config::MediaConfig::default();
        assert!(ice_servers(&c, "p", 0).is_empty());
        c.stun_urls = vec!["stun:127.0.0.1:3478".into()];
        c.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn_secret = "0123456789abcdef".into();
        let s = ice_servers(&c, "p", 100);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].username, None);
        assert_eq!(s[1].username.as_deref(), Some("86500:p"));
        assert_eq!(s[1].credential.as_ref().map(String::len), Some(28));
    }
}
