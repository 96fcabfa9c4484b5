//! Configuration: server settings and the meetings roundtable hosts.
//!
//! A configuration is a TOML document with one `[server]` table and one or more
//! `[[meeting]]` tables, each with a `[meeting.floor]` table and an ordered list of
//! `[[meeting.agenda]]` items. [`DEFAULT_TOML`] is the built-in default: the reference
//! event (the ECO roundtable on regional cooperation in the field of minerals, Baku).
//!
//! Loading is two steps: serde parses the document (unknown keys are rejected, so typos
//! are reported with their line), then [`Config::validate`] checks every value, fills the
//! derived fields ([`ServerConfig::listen_addr`], [`MeetingConfig::starts_at_ms`], default
//! agenda item ids) and reports the first problem with its dotted key, such as
//! `meeting[0].agenda[3].minutes`.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The built-in default configuration: the reference event (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Longest identifier accepted for meetings, agenda items and participants.
pub const MAX_ID_LEN: usize = 64;

/// Smallest accepted value of [`ServerConfig::max_frame_bytes`].
pub const MIN_FRAME_BYTES: u32 = 1024;
/// Largest accepted value of [`ServerConfig::max_frame_bytes`].
pub const MAX_FRAME_BYTES: u32 = 1_048_576;
/// Largest accepted value of [`FloorConfig::max_speakers`] (congress systems allow 1-10 open microphones).
pub const MAX_SPEAKERS: u32 = 10;
/// Largest accepted value of [`AgendaItemConfig::minutes`] (ten hours).
pub const MAX_ITEM_MINUTES: u32 = 600;

/// An error while loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The document is not valid TOML or does not have the expected shape
    /// (unknown key, wrong type, missing required key).
    #[error("cannot parse config {origin}: {message}")]
    Parse {
        /// Where the document came from: a file path or a description such as `built-in default`.
        origin: String,
        /// The parser's message; it names the offending key and line.
        message: String,
    },
    /// A value is out of range or inconsistent with another value.
    #[error("invalid config value at {key}: {message}")]
    Invalid {
        /// Dotted path of the offending value, e.g. `meeting[0].floor.max_speakers`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration: server settings and the meetings to host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server settings (`[server]`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Media settings (`[media]`).
    #[serde(default)]
    pub media: MediaConfig,
    /// The meetings, in file order (`[[meeting]]`). At least one is required.
    #[serde(rename = "meeting", default)]
    pub meetings: Vec<MeetingConfig>,
}

/// Media settings: the one UDP port, the address to advertise, and the ICE servers clients use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Run the media engine (the SFU). Off: floor control only.
    pub enabled: bool,
    /// The one UDP address every peer connection shares (the port a venue opens).
    /// Default `127.0.0.1:8443`; use `0.0.0.0:8443` (and `advertise_ip`) on a server.
    pub udp: String,
    /// Parsed `udp` (filled by validation).
    #[serde(skip)]
    pub udp_addr: SocketAddr,
    /// The public IP to put in candidates when the server sits behind a 1:1 NAT; empty: the
    /// bind address.
    pub advertise_ip: String,
    /// STUN URLs handed to clients (`stun:host:port`).
    pub stun_urls: Vec<String>,
    /// TURN URLs handed to clients (`turn:host:3478?transport=udp`, `turns:host:5349`).
    pub turn_urls: Vec<String>,
    /// The TURN server's shared secret (coturn `use-auth-secret` / `static-auth-secret`); the
    /// server mints time-limited credentials from it for each participant.
    pub turn_secret: String,
    /// Lifetime of minted TURN credentials, seconds.
    pub turn_ttl_secs: u32,
    /// Also accept ICE over TCP (RFC 6544, passive) on the same address and port number as
    /// `udp`, for networks that block UDP.
    pub ice_tcp: bool,
    /// How long the stream-health history (scores every 2 s, alerts) is kept, minutes.
    pub health_retention_minutes: u32,
    /// Measure stream health (on by default; off only to measure what it costs).
    pub health: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            udp: "127.0.0.1:8443".into(),
            udp_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            advertise_ip: String::new(),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: String::new(),
            turn_ttl_secs: 86_400,
            ice_tcp: true,
            health_retention_minutes: 1_440,
            health: true,
        }
    }
}

impl MediaConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.udp_addr = self.udp.trim().parse().map_err(|_| {
            invalid(
                "media.udp",
                format!(
                    "must be an address with a port, like \"0.0.0.0:8443\" (got {:?})",
                    self.udp
                ),
            )
        })?;
        if !self.advertise_ip.is_empty() && self.advertise_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "media.advertise_ip",
                format!(
                    "must be empty or an IP address (got {:?})",
                    self.advertise_ip
                ),
            ));
        }
        for (i, url) in self.stun_urls.iter().enumerate() {
            if !url.starts_with("stun:") && !url.starts_with("stuns:") {
                return Err(invalid(
                    format!("media.stun_urls[{i}]"),
                    format!("must start with stun: or stuns: (got {url:?})"),
                ));
            }
        }
        for (i, url) in self.turn_urls.iter().enumerate() {
            if !url.starts_with("turn:") && !url.starts_with("turns:") {
                return Err(invalid(
                    format!("media.turn_urls[{i}]"),
                    format!("must start with turn: or turns: (got {url:?})"),
                ));
            }
        }
        if !self.turn_urls.is_empty() && self.turn_secret.chars().count() < 16 {
            return Err(invalid(
                "media.turn_secret",
                "TURN URLs need the TURN server's shared secret (at least 16 characters)",
            ));
        }
        check_positive("media.turn_ttl_secs", self.turn_ttl_secs)?;
        Ok(())
    }
}

/// Server settings: listening address, links, storage and protocol limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP/WebSocket server listens on, as written (`listen`). Default `127.0.0.1:8080`.
    pub listen: String,
    /// [`Self::listen`] parsed; filled by [`Config::validate`].
    #[serde(skip)]
    pub listen_addr: SocketAddr,
    /// Base URL for printed links; empty means `http://<listen>`. See [`Self::base_url`].
    pub public_url: String,
    /// Directory for the journal, the generated secret and other state. Default `data`.
    pub data_dir: PathBuf,
    /// Secret for signing tokens; empty means generated and stored in [`Self::data_dir`] on first run.
    pub secret: String,
    /// Soft limit per WebSocket message in bytes, 1024..=1048576. Default 65536.
    pub max_frame_bytes: u32,
    /// Per-connection rate limit: commands refilled per second (token bucket). Default 20.
    pub commands_per_second: u32,
    /// Per-connection rate limit: bucket size, the largest burst of commands. Default 40.
    pub command_burst: u32,
    /// Lifetime of issued tokens, in hours. Default 72.
    pub token_ttl_hours: u32,
    /// Origins (`https://host[:port]`) whose pages may open the websocket besides the
    /// server's own (the request's `Host`, and [`Self::public_url`]'s). Default none.
    pub allowed_origins: Vec<String>,
    /// How long a participant whose connection dropped keeps their place in the queue and
    /// their floor, waiting for them to come back, in seconds (0..=3600). Default 60.
    pub resume_grace_secs: u32,
    /// TLS certificate chain (PEM); with [`Self::tls_key`], the server speaks HTTPS/WSS itself.
    /// Empty: plain HTTP (behind a reverse proxy, or on a LAN). Default empty.
    pub tls_cert: String,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1). Default empty.
    pub tls_key: String,
    /// Open connections per remote IP address (0: no limit). Default 512.
    pub max_connections_per_ip: u32,
    /// New connections per second per remote IP address, with a burst of ten times this (0: no
    /// limit). Default 50.
    pub connections_per_ip_per_sec: u32,
    /// How many participants of each role may be connected to a meeting at once.
    pub max_per_role: RoleLimits,
}

/// Connected participants per role and meeting (`[server.max_per_role]`); each 1..=10000.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleLimits {
    /// The chair (and co-chairs). Default 4.
    pub moderator: u32,
    /// Remote delegates. Default 300.
    pub delegate: u32,
    /// Room endpoints. Default 4.
    pub room: u32,
    /// Technicians. Default 8.
    pub technician: u32,
    /// Observers. Default 500.
    pub observer: u32,
    /// Floor assistants. Default 8.
    pub assistant: u32,
}

impl Default for RoleLimits {
    fn default() -> Self {
        RoleLimits {
            moderator: 4,
            delegate: 300,
            room: 4,
            technician: 8,
            observer: 500,
            assistant: 8,
        }
    }
}

impl RoleLimits {
    /// The limit for `role`.
    pub fn of(&self, role: roundtable_signaling::Role) -> u32 {
        use roundtable_signaling::Role as R;
        match role {
            R::Moderator => self.moderator,
            R::Delegate => self.delegate,
            R::Room => self.room,
            R::Technician => self.technician,
            R::Observer => self.observer,
            R::Assistant => self.assistant,
        }
    }
}

/// One meeting: identity, schedule, floor rules and agenda.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingConfig {
    /// Stable identifier used in links and the journal; `[a-z0-9-]{1,64}`, unique. Required.
    pub id: String,
    /// Title shown to participants and in the minutes. Required, not empty.
    pub title: String,
    /// Organiser(s), free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organiser: Option<String>,
    /// Venue, free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
    /// Planned start as written, RFC 3339 with offset (e.g. `2026-10-26T10:00:00+04:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// [`Self::starts_at`] as unix milliseconds; filled by [`Config::validate`].
    #[serde(skip)]
    pub starts_at_ms: Option<i64>,
    /// Floor rules (`[meeting.floor]`).
    #[serde(default)]
    pub floor: FloorConfig,
    /// Agenda items in order (`[[meeting.agenda]]`).
    #[serde(default)]
    pub agenda: Vec<AgendaItemConfig>,
}

/// How the microphone floor is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// The chair gives the floor; requests queue until then.
    #[default]
    Moderated,
    /// Requests are granted while a microphone is free.
    Open,
}

/// What happens to a new request when every microphone is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// The request waits in the queue.
    #[default]
    Wait,
    /// The longest current speaker is cut off to make room.
    Override,
}

/// Floor rules of a meeting (`[meeting.floor]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloorConfig {
    /// Who gives the floor. Default `moderated`.
    pub policy: PolicyKind,
    /// Maximum number of open microphones, 1..=10; the chair never counts. Default 1.
    pub max_speakers: u32,
    /// Behaviour when every microphone is taken. Default `wait`.
    pub when_full: WhenFull,
    /// Limit per intervention in seconds; 0 means no limit. Default 180.
    pub speaking_limit_secs: u32,
    /// Warning before the speaking limit runs out, in seconds; below any non-zero limit. Default 30.
    pub warning_secs: u32,
    /// Revoke the floor when the limit is reached (otherwise the overrun is shown). Default false.
    pub auto_revoke: bool,
    /// Moderated only: requests wait as Pending until the chair accepts them. Default false.
    pub screen_requests: bool,
    /// Wrap-up warning before an agenda item's planned end, in seconds. Default 60.
    pub item_warning_secs: u32,
}

/// The kind of an agenda item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// Opening, welcoming or closing remarks.
    Remarks,
    /// A presentation slot held by its presenter(s).
    Presentation,
    /// An open dialogue with a moderated floor and timed interventions.
    Dialogue,
    /// A break.
    Break,
}

/// One agenda item (`[[meeting.agenda]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgendaItemConfig {
    /// Identifier unique within the meeting, `[a-z0-9-]{1,64}`; empty or absent becomes
    /// `item-<n>` (1-based position) in [`Config::validate`].
    #[serde(default)]
    pub id: String,
    /// What kind of item this is. Required.
    pub kind: ItemKind,
    /// Title shown on screens and in the minutes. Required, not empty.
    pub title: String,
    /// Planned duration in minutes, 1..=600. Required.
    pub minutes: u32,
    /// Dialogue only: limit per intervention in seconds, overriding
    /// [`FloorConfig::speaking_limit_secs`] during this item; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention_secs: Option<u32>,
    /// Presenters in speaking order (`[[meeting.agenda.presenters]]`).
    #[serde(default)]
    pub presenters: Vec<PresenterConfig>,
}

/// A presenter of an agenda item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenterConfig {
    /// Name as it should be shown, with honorific (e.g. `Mr. Alan Young`). Must not be empty.
    #[serde(default)]
    pub name: String,
    /// Title or function (e.g. `Co-Director`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Organisation represented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// Participant id (`[a-z0-9-]{1,64}`) so the presenter can be invited to join remotely;
    /// absent means the presenter speaks from the lectern in the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 8080));
        Self {
            listen: listen_addr.to_string(),
            listen_addr,
            public_url: String::new(),
            data_dir: PathBuf::from("data"),
            secret: String::new(),
            max_frame_bytes: 65_536,
            commands_per_second: 20,
            command_burst: 40,
            token_ttl_hours: 72,
            allowed_origins: Vec::new(),
            resume_grace_secs: 60,
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections_per_ip: 512,
            connections_per_ip_per_sec: 50,
            max_per_role: RoleLimits::default(),
        }
    }
}

impl Default for FloorConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Moderated,
            max_speakers: 1,
            when_full: WhenFull::Wait,
            speaking_limit_secs: 180,
            warning_secs: 30,
            auto_revoke: false,
            screen_requests: false,
            item_warning_secs: 60,
        }
    }
}

impl ItemKind {
    /// The name used in the configuration and the protocol (`remarks`, `presentation`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Remarks => "remarks",
            ItemKind::Presentation => "presentation",
            ItemKind::Dialogue => "dialogue",
            ItemKind::Break => "break",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ServerConfig {
    /// Base URL for printed links, without a trailing slash: [`Self::public_url`] if set,
    /// otherwise `http://<listen_addr>`.
    pub fn base_url(&self) -> String {
        let url = self.public_url.trim().trim_end_matches('/');
        if url.is_empty() {
            let scheme = if self.tls_cert.trim().is_empty() {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{}", self.listen_addr)
        } else {
            url.to_string()
        }
    }
}

impl AgendaItemConfig {
    /// Planned duration in seconds.
    pub fn planned_secs(&self) -> u64 {
        u64::from(self.minutes) * 60
    }

    /// Speaking limit per intervention during this item, in seconds (0 = no limit):
    /// [`Self::intervention_secs`] if set, otherwise the floor's [`FloorConfig::speaking_limit_secs`].
    pub fn speaking_limit_secs(&self, floor: &FloorConfig) -> u32 {
        self.intervention_secs.unwrap_or(floor.speaking_limit_secs)
    }
}

/// Whether `s` is a valid identifier for a meeting, agenda item or participant:
/// 1 to 64 characters, each a lowercase ASCII letter, a digit or `-`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Config {
    /// The built-in default configuration ([`DEFAULT_TOML`]), parsed and validated.
    pub fn default_event() -> Config {
        Config::from_toml_str(DEFAULT_TOML, "built-in default")
            .expect("built-in default config is valid (checked by tests)")
    }

    /// Parses and validates a configuration; `origin` names the source in parse errors
    /// (a file path or e.g. `built-in default`).
    pub fn from_toml_str(s: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(s).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// The meeting with the given id, if any.
    pub fn meeting(&self, id: &str) -> Option<&MeetingConfig> {
        self.meetings.iter().find(|m| m.id == id)
    }

    /// Checks every value and fills the derived fields: [`ServerConfig::listen_addr`],
    /// [`MeetingConfig::starts_at_ms`] and default agenda item ids (`item-<n>`).
    /// Returns the first problem found as [`ConfigError::Invalid`].
    /// [`Config::from_toml_str`] and [`Config::load`] call it; call it yourself after
    /// building or changing a `Config` in code.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.media.validate()?;
        if self.meetings.is_empty() {
            return Err(invalid("meeting", "at least one [[meeting]] is required"));
        }
        let mut meeting_ids: HashMap<&str, usize> = HashMap::new();
        for (i, meeting) in self.meetings.iter_mut().enumerate() {
            meeting.validate(&format!("meeting[{i}]"))?;
        }
        for (i, meeting) in self.meetings.iter().enumerate() {
            if let Some(first) = meeting_ids.insert(&meeting.id, i) {
                return Err(invalid(
                    format!("meeting[{i}].id"),
                    format!(
                        "duplicate meeting id {:?} (also used by meeting[{first}])",
                        meeting.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.listen_addr = self.listen.trim().parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "must be an address with a port, like \"127.0.0.1:8080\" or \"[::]:8080\" (got {:?})",
                    self.listen
                ),
            )
        })?;
        for o in &self.allowed_origins {
            let ok = match o.trim_end_matches('/').split_once("://") {
                Some(("http" | "https", host)) => !host.is_empty() && !host.contains('/'),
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    "server.allowed_origins",
                    format!("each must be an origin like \"https://host:port\" (got {o:?})"),
                ));
            }
        }
        let url = self.public_url.trim();
        let has_scheme = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !has_scheme {
            return Err(invalid(
                "server.public_url",
                format!(
                    "must be empty or start with http:// or https:// (got {:?})",
                    self.public_url
                ),
            ));
        }
        check_range(
            "server.max_frame_bytes",
            self.max_frame_bytes,
            MIN_FRAME_BYTES,
            MAX_FRAME_BYTES,
        )?;
        check_positive("server.commands_per_second", self.commands_per_second)?;
        check_positive("server.command_burst", self.command_burst)?;
        check_positive("server.token_ttl_hours", self.token_ttl_hours)?;
        check_range("server.resume_grace_secs", self.resume_grace_secs, 0, 3600)?;
        for role in roundtable_signaling::Role::ALL {
            check_range(
                &format!("server.max_per_role.{}", role.as_str()),
                self.max_per_role.of(role),
                1,
                10_000,
            )?;
        }
        if self.tls_cert.trim().is_empty() != self.tls_key.trim().is_empty() {
            let key = if self.tls_cert.trim().is_empty() {
                "server.tls_cert"
            } else {
                "server.tls_key"
            };
            return Err(invalid(
                key,
                "tls_cert and tls_key go together: set both (HTTPS) or neither (HTTP)".to_owned(),
            ));
        }
        let secret_len = self.secret.chars().count();
        if secret_len > 0 && secret_len < crate::auth::MIN_SECRET_LEN {
            return Err(invalid(
                "server.secret",
                format!(
                    "must be empty (generated and stored in data_dir) or at least {} characters (got {secret_len})",
                    crate::auth::MIN_SECRET_LEN
                ),
            ));
        }
        Ok(())
    }
}

impl MeetingConfig {
    fn validate(&mut self, key: &str) -> Result<(), ConfigError> {
        check_id(&format!("{key}.id"), &self.id)?;
        check_not_empty(&format!("{key}.title"), &self.title)?;
        self.starts_at_ms = match &self.starts_at {
            None => None,
            Some(raw) => Some(parse_rfc3339_ms(raw).ok_or_else(|| {
                invalid(
                    format!("{key}.starts_at"),
                    format!(
                        "must be an RFC 3339 date and time with offset, like \"2026-10-26T10:00:00+04:00\" (got {raw:?})"
                    ),
                )
            })?),
        };
        self.floor.validate(&format!("{key}.floor"))?;

        for (i, item) in self.agenda.iter_mut().enumerate() {
            if item.id.is_empty() {
                item.id = format!("item-{}", i + 1);
            }
        }
        let mut item_ids: HashMap<&str, usize> = HashMap::new();
        for (i, item) in self.agenda.iter().enumerate() {
            let item_key = format!("{key}.agenda[{i}]");
            item.validate(&item_key, &self.floor)?;
            if let Some(first) = item_ids.insert(&item.id, i) {
                return Err(invalid(
                    format!("{item_key}.id"),
                    format!(
                        "duplicate agenda item id {:?} (also used by {key}.agenda[{first}])",
                        item.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl FloorConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_range(
            &format!("{key}.max_speakers"),
            self.max_speakers,
            1,
            MAX_SPEAKERS,
        )?;
        if self.speaking_limit_secs > 0 && self.warning_secs >= self.speaking_limit_secs {
            return Err(invalid(
                format!("{key}.warning_secs"),
                format!(
                    "must be less than speaking_limit_secs ({}) (got {})",
                    self.speaking_limit_secs, self.warning_secs
                ),
            ));
        }
        if self.screen_requests && self.policy != PolicyKind::Moderated {
            return Err(invalid(
                format!("{key}.screen_requests"),
                "only allowed with policy = \"moderated\"",
            ));
        }
        Ok(())
    }
}

impl AgendaItemConfig {
    fn validate(&self, key: &str, floor: &FloorConfig) -> Result<(), ConfigError> {
        check_id(&format!("{key}.id"), &self.id)?;
        check_not_empty(&format!("{key}.title"), &self.title)?;
        check_range(&format!("{key}.minutes"), self.minutes, 1, MAX_ITEM_MINUTES)?;
        if let Some(secs) = self.intervention_secs {
            if self.kind != ItemKind::Dialogue {
                return Err(invalid(
                    format!("{key}.intervention_secs"),
                    format!(
                        "only allowed for kind = \"dialogue\" (this item is {:?})",
                        self.kind.as_str()
                    ),
                ));
            }
            if secs > 0 && floor.warning_secs >= secs {
                return Err(invalid(
                    format!("{key}.intervention_secs"),
                    format!(
                        "must be 0 (no limit) or more than floor.warning_secs ({}) (got {secs})",
                        floor.warning_secs
                    ),
                ));
            }
        }
        for (i, presenter) in self.presenters.iter().enumerate() {
            let p_key = format!("{key}.presenters[{i}]");
            check_not_empty(&format!("{p_key}.name"), &presenter.name)?;
            if let Some(participant) = &presenter.participant {
                check_id(&format!("{p_key}.participant"), participant)?;
            }
        }
        Ok(())
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn check_range(key: &str, value: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

fn check_positive(key: &str, value: u32) -> Result<(), ConfigError> {
    if value > 0 {
        Ok(())
    } else {
        Err(invalid(key, "must be greater than 0 (got 0)"))
    }
}

fn check_id(key: &str, value: &str) -> Result<(), ConfigError> {
    if is_valid_id(value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be 1 to {MAX_ID_LEN} characters of a-z, 0-9 and '-' (got {value:?})"),
        ))
    }
}

fn check_not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

fn parse_rfc3339_ms(raw: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(raw.trim(), &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid configuration.
    const MIN: &str = r#"
[[meeting]]
id = "m"
title = "T"
"#;

    /// Parses `src`, expects an [`ConfigError::Invalid`] and returns its key and message.
    fn invalid_at(src: &str) -> (String, String) {
        match Config::from_toml_str(src, "test") {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    /// The key of the Invalid error for `MIN` plus a `[server]` table with `body`.
    fn server_error(body: &str) -> String {
        invalid_at(&format!("[server]\n{body}\n{MIN}")).0
    }

    /// The key of the Invalid error for `MIN` plus a `[meeting.floor]` table with `body`.
    fn floor_error(body: &str) -> String {
        invalid_at(&format!("{MIN}[meeting.floor]\n{body}\n")).0
    }

    /// The key of the Invalid error for `MIN` plus the given agenda items.
    fn agenda_error(items: &str) -> String {
        invalid_at(&format!("{MIN}{items}")).0
    }

    #[test]
    fn default_event_parses_with_the_reference_agenda() {
        let config =
            Config::from_toml_str(DEFAULT_TOML, "built-in default").expect("default parses");
        assert_eq!(config, Config::default_event());
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.server.base_url(), "http://127.0.0.1:8080");
        assert_eq!(config.meetings.len(), 1);
        let m = &config.meetings[0];
        assert_eq!(m.id, "baku-minerals");
        assert!(
            m.title
                .contains("New horizons for enhanced regional cooperation")
        );
        assert!(m.venue.as_deref().is_some_and(|v| v.contains("Baku")));
        assert!(m.organiser.as_deref().is_some_and(|o| o.contains("ECO")));
        let start = time::macros::datetime!(2026-10-26 10:00 +4);
        assert_eq!(m.starts_at_ms, Some(start.unix_timestamp() * 1000));
        assert_eq!(m.floor, FloorConfig::default());

        let expected = [
            ("opening", ItemKind::Remarks, 6, Some("mukhtar-babayev")),
            (
                "welcome",
                ItemKind::Remarks,
                5,
                Some("huseyin-avni-bicakli"),
            ),
            (
                "circular-economy",
                ItemKind::Presentation,
                15,
                Some("alan-young"),
            ),
            (
                "just-transition",
                ItemKind::Presentation,
                15,
                Some("hari-tulsidas"),
            ),
            (
                "regional-cooperation",
                ItemKind::Presentation,
                15,
                Some("fuad-farzalibeyov"),
            ),
            (
                "metal-resourcing",
                ItemKind::Presentation,
                15,
                Some("anar-valiyev"),
            ),
            ("dialogue", ItemKind::Dialogue, 45, None),
            ("outcome", ItemKind::Remarks, 10, None),
        ];
        assert_eq!(m.agenda.len(), expected.len());
        for (item, (id, kind, minutes, participant)) in m.agenda.iter().zip(expected) {
            assert_eq!(item.id, id);
            assert_eq!(item.kind, kind, "{id}");
            assert_eq!(item.minutes, minutes, "{id}");
            assert_eq!(
                item.presenters
                    .first()
                    .and_then(|p| p.participant.as_deref()),
                participant,
                "{id}"
            );
        }
        let young = &m.agenda[2].presenters[0];
        assert_eq!(young.name, "Mr. Alan Young");
        assert_eq!(young.role.as_deref(), Some("Co-Director"));
        assert_eq!(
            young.organisation.as_deref(),
            Some("Materials Efficiency Research Group (MERG)")
        );
        let dialogue = &m.agenda[6];
        assert_eq!(dialogue.intervention_secs, Some(180));
        assert_eq!(dialogue.speaking_limit_secs(&m.floor), 180);
        assert_eq!(m.floor.warning_secs, 30);
        assert!(m.agenda[7].title.starts_with("Outcome"));
        assert_eq!(config.meeting("baku-minerals"), Some(m));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml_str(MIN, "test").expect("minimal config is valid");
        assert_eq!(
            config.server.listen_addr,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
        );
        assert_eq!(config.server.data_dir, PathBuf::from("data"));
        assert_eq!(config.meetings[0].floor, FloorConfig::default());
        assert_eq!(config.meetings[0].starts_at_ms, None);
        assert!(config.meetings[0].agenda.is_empty());
    }

    #[test]
    fn agenda_item_ids_default_to_position() {
        let src = format!(
            "{MIN}
[[meeting.agenda]]
kind = \"remarks\"
title = \"A\"
minutes = 5
[[meeting.agenda]]
id = \"named\"
kind = \"break\"
title = \"B\"
minutes = 5
[[meeting.agenda]]
kind = \"dialogue\"
title = \"C\"
minutes = 5
"
        );
        let config = Config::from_toml_str(&src, "test").expect("valid");
        let ids: Vec<&str> = config.meetings[0]
            .agenda
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["item-1", "named", "item-3"]);
    }

    #[test]
    fn requires_a_meeting() {
        let (key, _) = invalid_at("[server]\nlisten = \"127.0.0.1:9000\"\n");
        assert_eq!(key, "meeting");
    }

    #[test]
    fn rejects_bad_meeting_id() {
        for id in ["", "Baku", "baku minerals", "a".repeat(65).as_str()] {
            let (key, _) = invalid_at(&format!("[[meeting]]\nid = {id:?}\ntitle = \"T\"\n"));
            assert_eq!(key, "meeting[0].id", "{id:?}");
        }
        assert!(is_valid_id(&"a".repeat(64)));
    }

    #[test]
    fn rejects_duplicate_meeting_id() {
        let (key, message) = invalid_at(&format!("{MIN}{MIN}"));
        assert_eq!(key, "meeting[1].id");
        assert!(message.contains("meeting[0]"), "{message}");
    }

    #[test]
    fn rejects_empty_title() {
        let (key, _) = invalid_at("[[meeting]]\nid = \"m\"\ntitle = \"  \"\n");
        assert_eq!(key, "meeting[0].title");
    }

    #[test]
    fn rejects_bad_starts_at() {
        for at in ["2026-10-26 10:00", "2026-10-26T10:00:00", "26 October"] {
            let (key, _) = invalid_at(&format!("{MIN}starts_at = {at:?}\n"));
            assert_eq!(key, "meeting[0].starts_at", "{at}");
        }
    }

    #[test]
    fn starts_at_is_converted_to_unix_ms() {
        let src = format!("{MIN}starts_at = \"1970-01-01T01:00:01.5+01:00\"\n");
        let config = Config::from_toml_str(&src, "test").expect("valid");
        assert_eq!(config.meetings[0].starts_at_ms, Some(1500));
    }

    #[test]
    fn rejects_bad_listen() {
        assert_eq!(server_error("listen = \"localhost\""), "server.listen");
        assert_eq!(server_error("listen = \"127.0.0.1\""), "server.listen");
    }

    #[test]
    fn rejects_an_allowed_origin_that_is_not_an_origin() {
        for bad in ["example.org", "https://example.org/path", "ftp://x"] {
            assert_eq!(
                server_error(&format!("allowed_origins = [\"{bad}\"]")),
                "server.allowed_origins",
                "{bad}"
            );
        }
        let src = format!("[server]\nallowed_origins = [\"https://portal.example.org\"]\n{MIN}");
        assert!(Config::from_toml_str(&src, "test").is_ok());
    }

    #[test]
    fn rejects_bad_public_url() {
        assert_eq!(
            server_error("public_url = \"example.org\""),
            "server.public_url"
        );
    }

    #[test]
    fn base_url_prefers_public_url() {
        let src = format!("[server]\npublic_url = \"https://rt.example.org/\"\n{MIN}");
        let config = Config::from_toml_str(&src, "test").expect("valid");
        assert_eq!(config.server.base_url(), "https://rt.example.org");
    }

    #[test]
    fn rejects_zero_rate_limits() {
        assert_eq!(
            server_error("commands_per_second = 0"),
            "server.commands_per_second"
        );
        assert_eq!(server_error("command_burst = 0"), "server.command_burst");
        assert_eq!(
            server_error("token_ttl_hours = 0"),
            "server.token_ttl_hours"
        );
    }

    #[test]
    fn media_section_is_validated() {
        let media_error = |body: &str| invalid_at(&format!("[media]\n{body}\n{MIN}")).0;
        assert_eq!(media_error("udp = \"nowhere\""), "media.udp");
        assert_eq!(
            media_error("advertise_ip = \"example.org\""),
            "media.advertise_ip"
        );
        assert_eq!(
            media_error("stun_urls = [\"http://x\"]"),
            "media.stun_urls[0]"
        );
        assert_eq!(
            media_error("turn_urls = [\"turn:127.0.0.1:3478\"]"),
            "media.turn_secret"
        );
        assert_eq!(media_error("turn_ttl_secs = 0"), "media.turn_ttl_secs");
        let ok = Config::from_toml_str(
            &format!("[media]\nudp = \"0.0.0.0:9000\"\nturn_urls = [\"turn:127.0.0.1:3478\"]\nturn_secret = \"0123456789abcdef\"\n{MIN}"),
            "test",
        )
        .unwrap();
        assert_eq!(ok.media.udp_addr.port(), 9000);
    }

    #[test]
    fn rejects_a_short_secret() {
        assert_eq!(server_error("secret = \"short\""), "server.secret");
    }

    #[test]
    fn rejects_max_frame_bytes_out_of_range() {
        assert_eq!(
            server_error("max_frame_bytes = 1023"),
            "server.max_frame_bytes"
        );
        assert_eq!(
            server_error("max_frame_bytes = 1048577"),
            "server.max_frame_bytes"
        );
        for ok in [1024, 1_048_576] {
            let src = format!("[server]\nmax_frame_bytes = {ok}\n{MIN}");
            assert!(Config::from_toml_str(&src, "test").is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_max_speakers_out_of_range() {
        assert_eq!(
            floor_error("max_speakers = 11"),
            "meeting[0].floor.max_speakers"
        );
        let err =
            Config::from_toml_str(&format!("{MIN}[meeting.floor]\nmax_speakers = 0\n"), "test")
                .expect_err("0 speakers is invalid");
        assert_eq!(
            err.to_string(),
            "invalid config value at meeting[0].floor.max_speakers: must be between 1 and 10 (got 0)"
        );
    }

    #[test]
    fn rejects_warning_not_below_limit() {
        let key = floor_error("speaking_limit_secs = 30\nwarning_secs = 30");
        assert_eq!(key, "meeting[0].floor.warning_secs");
        // Without a limit the warning is irrelevant.
        let src = format!("{MIN}[meeting.floor]\nspeaking_limit_secs = 0\nwarning_secs = 30\n");
        assert!(Config::from_toml_str(&src, "test").is_ok());
    }

    #[test]
    fn rejects_screen_requests_with_open_policy() {
        let key = floor_error("policy = \"open\"\nscreen_requests = true");
        assert_eq!(key, "meeting[0].floor.screen_requests");
    }

    #[test]
    fn rejects_minutes_out_of_range() {
        for minutes in [0, 601] {
            let key = agenda_error(&format!(
                "[[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"A\"\nminutes = 5\n\
                 [[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"B\"\nminutes = {minutes}\n"
            ));
            assert_eq!(key, "meeting[0].agenda[1].minutes", "{minutes}");
        }
    }

    #[test]
    fn rejects_duplicate_item_id() {
        // An explicit id may collide with a default one.
        let (key, message) = invalid_at(&format!(
            "{MIN}[[meeting.agenda]]\nid = \"item-2\"\nkind = \"remarks\"\ntitle = \"A\"\nminutes = 5\n\
             [[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"B\"\nminutes = 5\n"
        ));
        assert_eq!(key, "meeting[0].agenda[1].id");
        assert!(message.contains("meeting[0].agenda[0]"), "{message}");
    }

    #[test]
    fn rejects_bad_item_id() {
        let key = agenda_error(
            "[[meeting.agenda]]\nid = \"Opening\"\nkind = \"remarks\"\ntitle = \"A\"\nminutes = 5\n",
        );
        assert_eq!(key, "meeting[0].agenda[0].id");
    }

    #[test]
    fn rejects_intervention_secs_outside_dialogue() {
        let key = agenda_error(
            "[[meeting.agenda]]\nkind = \"presentation\"\ntitle = \"A\"\nminutes = 15\nintervention_secs = 120\n",
        );
        assert_eq!(key, "meeting[0].agenda[0].intervention_secs");
    }

    #[test]
    fn rejects_intervention_secs_not_above_warning() {
        let key = agenda_error(
            "[[meeting.agenda]]\nkind = \"dialogue\"\ntitle = \"A\"\nminutes = 15\nintervention_secs = 20\n",
        );
        assert_eq!(key, "meeting[0].agenda[0].intervention_secs");
    }

    #[test]
    fn rejects_bad_participant_id() {
        let key = agenda_error(
            "[[meeting.agenda]]\nkind = \"presentation\"\ntitle = \"A\"\nminutes = 15\n\
             [[meeting.agenda.presenters]]\nname = \"A\"\nparticipant = \"a-b\"\n\
             [[meeting.agenda.presenters]]\nname = \"B\"\nparticipant = \"Alan Young\"\n",
        );
        assert_eq!(key, "meeting[0].agenda[0].presenters[1].participant");
    }

    #[test]
    fn rejects_presenter_without_name() {
        let key = agenda_error(
            "[[meeting.agenda]]\nkind = \"presentation\"\ntitle = \"A\"\nminutes = 15\n\
             [[meeting.agenda.presenters]]\norganisation = \"MERG\"\n",
        );
        assert_eq!(key, "meeting[0].agenda[0].presenters[0].name");
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_field() {
        let cases = [
            format!("[server]\nlistn = \"127.0.0.1:1\"\n{MIN}"),
            format!("{MIN}[meeting.floor]\nmax_speaker = 2\n"),
            format!(
                "{MIN}[[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"A\"\nminutes = 5\nduration = 5\n"
            ),
            format!(
                "{MIN}[[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"A\"\nminutes = 5\n[[meeting.agenda.presenters]]\nname = \"A\"\norganization = \"B\"\n"
            ),
            format!("{MIN}chair = \"x\"\n"),
            format!("{MIN}[[meetings]]\nid = \"n\"\n"),
        ];
        let names = [
            "listn",
            "max_speaker",
            "duration",
            "organization",
            "chair",
            "meetings",
        ];
        for (src, name) in cases.iter().zip(names) {
            match Config::from_toml_str(src, "custom.toml") {
                Err(ConfigError::Parse { origin, message }) => {
                    assert_eq!(origin, "custom.toml");
                    assert!(message.contains(name), "{name}: {message}");
                }
                other => panic!("{name}: expected a Parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_enum_value_is_a_parse_error() {
        let src = format!("{MIN}[meeting.floor]\npolicy = \"chaired\"\n");
        let err = Config::from_toml_str(&src, "test").expect_err("unknown policy");
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("chaired")),
            "{err}"
        );
    }

    #[test]
    fn missing_required_field_is_a_parse_error() {
        let src = format!("{MIN}[[meeting.agenda]]\nkind = \"remarks\"\ntitle = \"A\"\n");
        let err = Config::from_toml_str(&src, "test").expect_err("minutes missing");
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("minutes")),
            "{err}"
        );
    }

    #[test]
    fn custom_config_round_trips() {
        let src = r#"
[server]
listen = "0.0.0.0:9000"
public_url = "https://rt.example.org"
data_dir = "/var/lib/roundtable"
max_frame_bytes = 2048
commands_per_second = 5
command_burst = 10
token_ttl_hours = 12

[[meeting]]
id = "board"
title = "Board meeting"
venue = "Room 4"
starts_at = "2026-01-02T09:30:00Z"
[meeting.floor]
policy = "open"
max_speakers = 3
when_full = "override"
speaking_limit_secs = 0
auto_revoke = true
[[meeting.agenda]]
kind = "presentation"
title = "Report"
minutes = 20
[[meeting.agenda.presenters]]
name = "Ms. A"
role = "Chair"
participant = "ms-a"
[[meeting.agenda.presenters]]
name = "Mr. B"
[[meeting.agenda]]
id = "qa"
kind = "dialogue"
title = "Questions"
minutes = 30
intervention_secs = 0

[[meeting]]
id = "second"
title = "Second"
"#;
        let config = Config::from_toml_str(src, "test").expect("valid");
        let m = &config.meetings[0];
        assert_eq!(m.floor.policy, PolicyKind::Open);
        assert_eq!(m.floor.when_full, WhenFull::Override);
        assert_eq!(m.agenda[0].id, "item-1");
        assert_eq!(m.agenda[1].speaking_limit_secs(&m.floor), 0);
        assert_eq!(m.agenda[0].planned_secs(), 1200);

        let text = toml::to_string(&config).expect("serializes");
        let again = Config::from_toml_str(&text, "round trip").expect("serialized form is valid");
        assert_eq!(again, config);

        let default_text = toml::to_string(&Config::default_event()).expect("serializes");
        let default_again =
            Config::from_toml_str(&default_text, "round trip").expect("serialized form is valid");
        assert_eq!(default_again, Config::default_event());
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir =
            std::env::temp_dir().join(format!("roundtable-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("event.toml");
        std::fs::write(&path, MIN).expect("write temp file");
        let config = Config::load(&path).expect("loads");
        assert_eq!(config.meetings[0].id, "m");

        std::fs::write(&path, "[[meeting]]\nid = \"m\"\n").expect("write temp file");
        match Config::load(&path) {
            Err(ConfigError::Parse { origin, .. }) => {
                assert_eq!(origin, path.display().to_string())
            }
            other => panic!("expected a Parse error, got {other:?}"),
        }

        let missing = dir.join("missing.toml");
        match Config::load(&missing) {
            Err(err @ ConfigError::Io { .. }) => {
                assert!(err.to_string().contains("missing.toml"), "{err}")
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).expect("clean up temp dir");
    }
}
