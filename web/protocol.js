// @ts-check
/**
 * roundtable's connection library: the websocket protocol (docs/PROTOCOL.md) and the two
 * WebRTC peer connections, with no UI. Pages build on it; tests drive it through the pages.
 *
 * - {@link Connection}: one websocket with automatic reconnect (exponential backoff with
 *   jitter), `hello`/`welcome`, clock sync by `ping`/`pong`, commands that resolve on `ack`
 *   and reject on `error`, and a {@link MeetingStore} that applies every event. It adopts the
 *   socket a page's inline script opened before the modules loaded (`window.__rtEarly`). A
 *   `goodbye` `removed` closes it for good (`removed`, `closeReason` `removed`); `reconnect`
 *   reconnects at once, and the media restart on the new welcome.
 * - {@link Publisher}: the publish peer connection (the client offers; simulcast camera).
 * - {@link Subscriber}: the subscribe peer connection (the server offers, with slots).
 * - {@link MediaSession}: both, restarted afresh after every `welcome`; kept through a
 *   `resumed` whose server held them (`media_held`), and mended by ICE restart when their
 *   network fails.
 * - {@link sampleStats}: the numbers a page or a test needs from `getStats`.
 * - {@link StatsReporter}: every page with media tells the server what only its browser knows
 *   of its streams (`client_stats`, every 2 s; built by {@link summarizeStats}). The store
 *   keeps the technician's `health` and every `alert` ({@link MeetingStore.alerts}).
 *
 * @module protocol
 */

export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// Wire types (docs/PROTOCOL.md, "Objects")

/** @typedef {'moderator'|'delegate'|'room'|'technician'|'observer'|'assistant'} Role */
/** @typedef {'joined'|'left'|'connection_lost'|'removed'} Presence */
/** @typedef {'main'|'reply'} ListKind */
/** @typedef {'pending'|'accepted'|'granted'} LiveState */

/**
 * @typedef {object} Participant
 * @property {string} id
 * @property {string} name
 * @property {string} delegation
 * @property {Role} role
 * @property {Presence} presence
 */

/**
 * @typedef {object} Beneficiary
 * @property {string} participant
 * @property {string} name
 * @property {string} delegation
 * @property {boolean} in_room
 */

/**
 * @typedef {object} RequestInfo
 * @property {number} id
 * @property {Beneficiary} beneficiary
 * @property {string} requested_by
 * @property {ListKind} list
 * @property {LiveState} state
 * @property {number} [position]
 * @property {number} requested_at
 * @property {number} [granted_at]
 * @property {number} [deadline]
 * @property {number} [limit_ms]
 * @property {number} [warning_ms]
 * @property {string} [slot]
 * @property {boolean} chair
 */

/**
 * @typedef {object} FloorSettings
 * @property {'moderated'|'open'} policy
 * @property {number} max_speakers
 * @property {'wait'|'override'} when_full
 * @property {number} speaking_limit_ms
 * @property {number} warning_ms
 * @property {boolean} auto_revoke
 * @property {boolean} screen_requests
 */

/**
 * @typedef {FloorSettings & {
 *   holders: RequestInfo[], pending: RequestInfo[], queue: RequestInfo[], replies: RequestInfo[]
 * }} FloorView
 */

/**
 * @typedef {object} Presenter
 * @property {string} name
 * @property {string} [role]
 * @property {string} [organisation]
 * @property {string} [participant]
 */

/**
 * @typedef {object} ItemInfo
 * @property {string} id
 * @property {'remarks'|'presentation'|'dialogue'|'break'} kind
 * @property {string} title
 * @property {Presenter[]} presenters
 * @property {number} planned_ms
 * @property {number} extended_ms
 * @property {number} [intervention_ms]
 * @property {number} [warning_ms] wrap-up phase: `item_warning` this long before the deadline
 * @property {'planned'|'running'|'paused'|'ended'|'skipped'} state
 * @property {number} [started_at]
 * @property {number} [deadline]
 * @property {number} [remaining_ms]
 * @property {number} [ended_at]
 * @property {number} [overrun_ms]
 */

/**
 * @typedef {object} AgendaView
 * @property {ItemInfo[]} items
 * @property {string} [current]
 * @property {number} [planned_start]
 * @property {number} [planned_end]
 * @property {number} [projected_end]
 */

/**
 * @typedef {object} MeetingInfo
 * @property {string} id
 * @property {string} title
 * @property {string} [organiser]
 * @property {string} [venue]
 */

/**
 * @typedef {object} Snapshot
 * @property {MeetingInfo} meeting
 * @property {FloorView} floor
 * @property {AgendaView} agenda
 * @property {Participant[]} participants
 * @property {string} [timer_message]
 */

/**
 * @typedef {object} IceServerInfo
 * @property {string[]} urls
 * @property {string} [username]
 * @property {string} [credential]
 */

/**
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {number} protocol
 * @property {number} server_time
 * @property {Participant} you
 * @property {number} seq
 * @property {Snapshot} snapshot
 * @property {IceServerInfo[]} [ice_servers]
 * @property {string} [session_token] for a one-time invite: the token of later connections
 */

/**
 * The answer to a `hello` with `resume_seq`: the store is kept, the events after `seq`
 * follow.
 * @typedef {object} Resumed
 * @property {'resumed'} type
 * @property {number} protocol
 * @property {number} server_time
 * @property {Participant} you
 * @property {number} seq
 * @property {IceServerInfo[]} [ice_servers]
 * @property {string} [session_token]
 * @property {boolean} [media_held] the server kept this participant's peer connections: keep
 *   them (the server re-offers the subscribe connection with an ICE restart)
 */

/**
 * A meeting event: `type` plus the fields of that event (docs/PROTOCOL.md, "Events").
 * @typedef {{type: string, by?: string, request?: any, item?: string, participant?: any,
 *   presence?: Presence, text?: string, reason?: string, position?: number,
 *   requests?: number[], minutes?: number, settings?: FloorSettings, limit_ms?: number,
 *   warning_ms?: number, slot?: string}} MeetingEvent
 */

/**
 * @typedef {object} EventMessage
 * @property {'event'} type
 * @property {number} seq
 * @property {number} at
 * @property {MeetingEvent} event
 * @property {FloorView} [floor]
 * @property {AgendaView} [agenda]
 */

/**
 * @typedef {object} Ack
 * @property {'ack'} type
 * @property {string} id
 * @property {number} [seq]
 * @property {number} [request]
 */

/**
 * @typedef {{slot: 'track', mid: string, participant: string,
 *   source: 'microphone'|'camera'|'screen'|'program', kind: 'audio'|'video'}
 *   | {slot: 'speaker', mid: string} | {slot: 'screen', mid: string}} SlotInfo
 */

/** @typedef {'microphone'|'camera'|'screen'|'program'} MediaSource */

// ---------------------------------------------------------------------------------------------
// Stream health (signaling/src/health.rs): `client_stats` from every page with media, `health`
// and `alert` to technicians (and floor alerts to the chair)

/** The type of an ICE candidate. @typedef {'host'|'srflx'|'prflx'|'relay'} CandidateType */
/** Why a sender's encoder holds back (W3C `qualityLimitationReason`). @typedef {'none'|'cpu'|'bandwidth'|'other'} QualityLimitation */

/**
 * A client's summary of its own sending side (`client_stats.up`). Every field is optional.
 * @typedef {object} ClientUp
 * @property {QualityLimitation} [quality_limitation] the worst of the camera's layers
 * @property {number} [available_kbps] outgoing bandwidth estimate, kbit/s (0 to 10 000 000)
 * @property {number} [fps] frames per second of the highest layer sent (0 to 240)
 * @property {number} [height] height of the highest layer sent, px (0 to 4320)
 * @property {number} [audio_level] microphone level, 0 to 1 (media-source `audioLevel`)
 */

/**
 * A client's summary of its own receiving side (`client_stats.down`). Every field is optional.
 * @typedef {object} ClientDown
 * @property {number} [freeze_count] video freezes so far, summed over the received videos
 * @property {number} [fps] frames per second of the main received video (0 to 240)
 * @property {number} [height] height of the main received video, px (0 to 4320)
 * @property {number} [jitter_buffer_ms] mean jitter buffer delay of the main video, ms (0 to 60 000)
 * @property {number} [packets_lost] packets lost so far on every received stream
 * @property {number} [audio_level] level of the loudest received audio, 0 to 1
 */

/**
 * The fields of a `client_stats` command (absent ones are left out).
 * @typedef {object} ClientStats
 * @property {ClientUp} [up]
 * @property {ClientDown} [down]
 * @property {CandidateType} [candidate] local candidate type of the selected ICE pair
 */

/** Quality grade of a score: above 80, above 40, 40 or less. @typedef {'excellent'|'good'|'poor'} Grade */
/** What brought a score down. @typedef {'loss'|'delay'|'bitrate'|'layer'|'dry'|'freeze'} HealthCause */

/**
 * One direction of one participant's media, as the server sees it.
 * @typedef {object} StreamHealth
 * @property {number} score 0 to 100, smoothed (falls fast, recovers slowly)
 * @property {Grade} grade
 * @property {HealthCause} [cause] what brought the score down (when below 100)
 * @property {number} [mos] estimated mean opinion score of the audio, 1 to 4.5
 * @property {number} loss_pct packet loss over the last period, percent
 * @property {number} jitter_ms interarrival jitter, ms
 * @property {number} [rtt_ms] round trip to the client, ms
 * @property {number} kbps bitrate, kbit/s
 * @property {number} [fps] video frames per second
 * @property {number} [height] video height, px
 * @property {number[]} [history] scores of the last 5 minutes, oldest first, one per 2 s
 */

/** What a technician forces a participant to receive. @typedef {'auto'|'low'|'audio_only'} ForceLayer */

/**
 * The client's own last report, as the server received it.
 * @typedef {object} ClientReport
 * @property {number} at when it arrived (server time)
 * @property {ClientUp} [up]
 * @property {ClientDown} [down]
 */

/**
 * One participant's row on the technician page.
 * @typedef {object} ParticipantHealth
 * @property {string} participant participant id
 * @property {StreamHealth} [up] what they send (absent: not publishing)
 * @property {StreamHealth} [down] what they receive (absent: not subscribed)
 * @property {CandidateType} [candidate] the client's side of the selected ICE pair
 * @property {number} [level] microphone level, 0 (loudest) to 127 (silence), -dBov
 * @property {ClientReport} [client] their last `client_stats`
 * @property {ForceLayer} [force] a technician's override of what they receive (absent: automatic)
 */

/** @typedef {'dry'|'frozen'|'loss'|'dead_mic'|'sound_without_floor'|'relay_only'|'cpu_high'} AlertKind */
/** Which direction of a participant's media: what they send, or what they receive. @typedef {'up'|'down'} Direction */

/**
 * An alert, raised and later cleared; a technician (or, for a floor alert, the chair)
 * acknowledges it.
 * @typedef {object} AlertInfo
 * @property {number} id per meeting, increasing
 * @property {AlertKind} kind
 * @property {string} [participant] whose stream (absent: the server's, `cpu_high`)
 * @property {Direction} [direction]
 * @property {string} detail for people, with the numbers
 * @property {number} raised_at server time
 * @property {number} [cleared_at] when the condition ended (absent: still on)
 * @property {string} [acked_by] who acknowledged it (participant id)
 * @property {number} [acked_at]
 * @property {boolean} floor a floor alert (`dead_mic`, `sound_without_floor`): the chair gets it too
 */

/**
 * Stream health of every participant with media, every 2 s, to technicians.
 * @typedef {object} HealthMessage
 * @property {'health'} type
 * @property {number} at server time it was computed
 * @property {ParticipantHealth[]} participants
 * @property {AlertInfo[]} alerts alerts still on or not yet acknowledged, oldest first
 * @property {number} cpu_pct the server process's CPU use over the last period, percent of one core
 */

/**
 * An alert raised, cleared or acknowledged.
 * @typedef {object} AlertMessage
 * @property {'alert'} type
 * @property {AlertInfo} alert the alert as it is now
 */

/**
 * Connection states shown to people.
 * - `connecting`: first attempt;
 * - `open`: joined (a `welcome` arrived);
 * - `reconnecting`: lost, trying again after a backoff (or at once: `reconnect`);
 * - `closed`: given up or closed on purpose; `closeReason` says why.
 * @typedef {'idle'|'connecting'|'open'|'reconnecting'|'closed'} ConnState
 */

/**
 * Why the server said goodbye (docs/PROTOCOL.md, "Goodbye and closing"):
 * - `shutdown` (close 1001): the server is stopping; reconnect with backoff;
 * - `replaced` (4000): the same participant joined elsewhere; stop (unless `reconnectForever`);
 * - `flood` (1008): too many refused frames;
 * - `removed` (4003): the chair removed this participant; stop for good, whatever the options;
 * - `reconnect` (4004): the chair asked this client to reconnect; reconnect at once (no
 *   backoff) and start media afresh (queue place and floor are kept by the server).
 * @typedef {'shutdown'|'replaced'|'flood'|'removed'|'reconnect'} GoodbyeReason
 */

/**
 * `Connection.closeReason` (and the reason passed with `state`) is either one of these codes
 * or a sentence for people:
 * - `removed`: closed for good, the chair removed this participant;
 * - `replaced`: closed, the invite was opened elsewhere;
 * - `reconnect`: reconnecting at once, the chair asked for it;
 * - `left`: closed by {@link Connection.close} with no reason given.
 * @typedef {'removed'|'replaced'|'reconnect'|'left'|string} CloseReason
 */

/** Websocket close codes the server uses with a goodbye, by reason. */
export const CLOSE_CODES = Object.freeze({ shutdown: 1001, flood: 1008, replaced: 4000, removed: 4003, reconnect: 4004 });

// ---------------------------------------------------------------------------------------------
// A tiny event emitter (no DOM EventTarget, so the library also runs in tests without a DOM)

/**
 * @template {Record<string, any[]>} M
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof M, Set<(...args: any[]) => void>>} */
    this._handlers = new Map();
  }
  /**
   * Subscribes; returns the function that unsubscribes.
   * @template {keyof M} K
   * @param {K} name
   * @param {(...args: M[K]) => void} fn
   * @returns {() => void}
   */
  on(name, fn) {
    let set = this._handlers.get(name);
    if (!set) {
      set = new Set();
      this._handlers.set(name, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }
  /**
   * @template {keyof M} K
   * @param {K} name
   * @param {M[K]} args
   */
  emit(name, ...args) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        console.error('roundtable: a handler failed', name, e);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

/** A command refused by the server (`error`), or one that could not be sent. */
export class ProtocolError extends Error {
  /**
   * @param {string} code a stable code from docs/PROTOCOL.md ("Error codes"), or
   *   `disconnected` / `timeout` from this library
   * @param {string} message for people
   * @param {string} [command] the command's type
   */
  constructor(code, message, command) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.command = command;
  }
}

// ---------------------------------------------------------------------------------------------
// Clock

/**
 * The server's clock as seen from here (NTP style, docs/PROTOCOL.md "Clock sync").
 * Keeps the sample with the smallest round trip among the recent ones.
 */
export class Clock {
  constructor() {
    /** Server clock minus client clock, ms. */
    this.offset = 0;
    /** Round trip of the sample in use, ms (Infinity before any pong). */
    this.rtt = Infinity;
    /** @type {{rtt: number, offset: number, at: number}[]} */
    this._samples = [];
    /** How many samples are kept (the best of them is used). */
    this.window = 12;
  }
  /** A rough first value from `welcome.server_time`, used until a pong arrives. */
  /** @param {number} serverTime @param {number} clientNow */
  rough(serverTime, clientNow) {
    if (this._samples.length === 0) this.offset = serverTime - clientNow;
  }
  /**
   * One ping/pong exchange.
   * @param {number} t0 client time at send
   * @param {number} t1 client time at receipt
   * @param {number} s server time in the pong
   */
  sample(t0, t1, s) {
    const rtt = t1 - t0;
    if (rtt < 0) return;
    this._samples.push({ rtt, offset: s - (t0 + t1) / 2, at: t1 });
    if (this._samples.length > this.window) this._samples.shift();
    let best = this._samples[0];
    for (const x of this._samples) if (x.rtt < best.rtt) best = x;
    this.offset = best.offset;
    this.rtt = best.rtt;
  }
  /** The server's clock now, ms since the epoch. */
  now() {
    return Date.now() + this.offset;
  }
  /**
   * Milliseconds until an absolute server time (negative once passed: an overrun).
   * @param {number} deadline
   */
  remaining(deadline) {
    return deadline - this.now();
  }
}

// ---------------------------------------------------------------------------------------------
// The meeting state

/**
 * @typedef {{welcome: [Welcome], event: [EventMessage], change: [MeetingEvent | null]}} StoreEvents
 */

/**
 * The meeting as the last `welcome` and the events since describe it. Subscribers get
 * `change` after every welcome (with `null`) and every event (with the event).
 * @extends {Emitter<StoreEvents>}
 */
export class MeetingStore extends Emitter {
  constructor() {
    super();
    /** @type {Participant | null} */
    this.you = null;
    /** @type {MeetingInfo | null} */
    this.meeting = null;
    /** @type {FloorView | null} */
    this.floor = null;
    /** @type {AgendaView | null} */
    this.agenda = null;
    /** @type {Map<string, Participant>} participants by id, in order of first arrival */
    this.participants = new Map();
    /** @type {string} */
    this.timerMessage = '';
    /** Last applied sequence number. */
    this.seq = 0;
    /** @type {IceServerInfo[]} */
    this.iceServers = [];
    /** @type {HealthMessage | null} the last `health` (technicians only; cleared by a welcome) */
    this.health = null;
    /**
     * @type {Map<number, AlertInfo>} every alert seen, by id, as it is now: from `alert`
     * messages and from `health.alerts` (kept across reconnects: the log of the session)
     */
    this.alerts = new Map();
  }

  /**
   * Keeps the latest stream health and the alerts it lists.
   * @param {HealthMessage} m
   */
  applyHealth(m) {
    this.health = m;
    for (const a of m.alerts ?? []) this.applyAlert(a);
  }

  /**
   * Keeps an alert as it is now (raised, cleared or acknowledged). Returns whether it is new
   * to this page.
   * @param {AlertInfo} a
   */
  applyAlert(a) {
    const isNew = !this.alerts.has(a.id);
    this.alerts.set(a.id, a);
    return isNew;
  }

  /** @param {Welcome} w */
  applyWelcome(w) {
    this.you = w.you;
    this.meeting = w.snapshot.meeting;
    this.floor = w.snapshot.floor;
    this.agenda = w.snapshot.agenda;
    this.participants = new Map(w.snapshot.participants.map((p) => [p.id, p]));
    this.timerMessage = w.snapshot.timer_message ?? '';
    this.seq = w.seq;
    this.iceServers = w.ice_servers ?? [];
    this.health = null;
    this.emit('welcome', w);
    this.emit('change', null);
  }

  /**
   * Applies one event. Returns false on a gap in `seq` (the caller should reconnect).
   * @param {EventMessage} m
   */
  applyEvent(m) {
    if (m.seq <= this.seq) return true; // already reflected (never expected)
    if (m.seq !== this.seq + 1) return false;
    this.seq = m.seq;
    if (m.floor) this.floor = m.floor;
    if (m.agenda) this.agenda = m.agenda;
    const e = m.event;
    switch (e.type) {
      case 'participant_joined': {
        /** @type {Participant} */
        const p = e.participant;
        this.participants.set(p.id, p);
        break;
      }
      case 'participant_left': {
        const p = this.participants.get(/** @type {string} */ (e.participant));
        if (p && e.presence) this.participants.set(p.id, { ...p, presence: e.presence });
        break;
      }
      case 'server_restarted':
        for (const [id, p] of this.participants) {
          if (p.presence === 'joined') this.participants.set(id, { ...p, presence: 'connection_lost' });
        }
        break;
      case 'timer_message':
        this.timerMessage = e.text ?? '';
        break;
    }
    this.emit('event', m);
    this.emit('change', e);
    return true;
  }

  /** Every live request, in all lists. */
  allRequests() {
    const f = this.floor;
    if (!f) return [];
    return [...f.holders, ...f.pending, ...f.queue, ...f.replies];
  }

  /**
   * The live request whose beneficiary is `participant` (default: you).
   * @param {string} [participant]
   */
  requestOf(participant) {
    const id = participant ?? this.you?.id;
    return this.allRequests().find((r) => r.beneficiary.participant === id) ?? null;
  }

  /** The current agenda item, if one is open. */
  currentItem() {
    const a = this.agenda;
    if (!a || !a.current) return null;
    return a.items.find((i) => i.id === a.current) ?? null;
  }

  /** @param {string} id */
  participantName(id) {
    return this.participants.get(id)?.name ?? id;
  }
}

// ---------------------------------------------------------------------------------------------
// The connection

/**
 * @typedef {object} EarlySocket
 * @property {WebSocket} ws
 * @property {number} protocol the version its hello said
 * @property {number} at when it was created (`performance.now()`)
 * @property {number} [openAt] when it opened
 * @property {number} [helloAt] when its `hello` went out (id `h0`)
 * @property {string[]} queue what the server sent before protocol.js took it over
 */

/**
 * The websocket a page's inline script opened (and said hello on) before the modules loaded
 * (`window.__rtEarly`, see web/delegate.html), if it is for `url`, speaks this protocol version
 * and is not closing; taken once (a reconnect opens its own).
 * @param {string} url
 * @returns {EarlySocket | null}
 */
function takeEarlySocket(url) {
  /** @type {any} */
  const g = globalThis;
  /** @type {EarlySocket | undefined} */
  const early = g.__rtEarly;
  if (!early) return null;
  g.__rtEarly = undefined;
  const ws = early.ws;
  if (typeof WebSocket === 'undefined' || !(ws instanceof WebSocket)) return null;
  let same = false;
  try {
    same = new URL(url, typeof location !== 'undefined' ? location.href : undefined).href === ws.url;
  } catch {
    same = false;
  }
  if (same && early.protocol === PROTOCOL_VERSION && (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN)) return early;
  try {
    ws.close();
  } catch {
    /* already closed */
  }
  return null;
}

/**
 * @typedef {object} ConnectionOptions
 * @property {string} token the invite token
 * @property {string} [url] websocket URL (default: `/ws` on this page's host)
 * @property {number} [minBackoffMs] first reconnect delay (default 500)
 * @property {number} [maxBackoffMs] longest reconnect delay (default 10000)
 * @property {number} [commandTimeoutMs] reject a command with no answer after this (default 15000)
 * @property {number} [pingEveryMs] clock re-sync interval (default 30000)
 * @property {boolean} [reconnectForever] never give up, even on `replaced` (the room screen)
 */

/**
 * @typedef {{
 *   state: [ConnState, string],
 *   welcome: [Welcome],
 *   message: [any],
 *   command_error: [ProtocolError],
 *   goodbye: [GoodbyeReason],
 *   joined: [Welcome | Resumed],
 *   resumed: [Resumed],
 *   publish_answer: [{type: 'publish_answer', pc?: string, sdp: string}],
 *   subscribe_offer: [{type: 'subscribe_offer', sdp: string, slots: SlotInfo[]}],
 *   subscribe_slots: [{type: 'subscribe_slots', slots: SlotInfo[]}],
 *   ice_candidate: [{type: 'ice_candidate', pc: 'publish'|'subscribe', candidate: string,
 *     sdp_mid?: string, sdp_m_line_index?: number}],
 *   clock: [Clock],
 *   health: [HealthMessage],
 *   alert: [AlertInfo, boolean],
 * }} ConnectionEvents
 */

/**
 * The server's refusal of a token (`/api/token`, 401): `token_used` (a one-time link opened
 * before), `token_revoked`, `token_expired`, `token_malformed`, `token_forged`, ….
 * @typedef {object} TokenRefusal
 * @property {string} code
 * @property {string} message
 */

/**
 * One participant's websocket, kept open.
 * @extends {Emitter<ConnectionEvents>}
 */
export class Connection extends Emitter {
  /** @param {ConnectionOptions} opts */
  constructor(opts) {
    super();
    this.token = opts.token;
    const proto = typeof location !== 'undefined' && location.protocol === 'https:' ? 'wss:' : 'ws:';
    const host = typeof location !== 'undefined' ? location.host : '127.0.0.1:8080';
    this.url = opts.url ?? `${proto}//${host}/ws?token=${encodeURIComponent(opts.token)}`;
    this.minBackoffMs = opts.minBackoffMs ?? 500;
    this.maxBackoffMs = opts.maxBackoffMs ?? 10000;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 15000;
    this.pingEveryMs = opts.pingEveryMs ?? 30000;
    this.reconnectForever = opts.reconnectForever ?? false;
    /** @type {ConnState} */
    this.state = 'idle';
    /** @type {CloseReason} why the connection is closed or reconnecting */
    this.closeReason = '';
    /** @type {GoodbyeReason | ''} the last goodbye received (cleared by a welcome) */
    this.goodbye = '';
    /** True once the chair removed this participant: closed for good. */
    this.removed = false;
    /**
     * Why the server refuses this page's token (a used one-time link, a revoked or expired
     * invite): closed for good, with state reason `refused`.
     * @type {TokenRefusal | null}
     */
    this.refusal = null;
    /** The next reconnect goes at once, with no backoff (`goodbye` `reconnect`). */
    this._immediate = false;
    /** Consecutive failed attempts (reset by a welcome). */
    this.attempts = 0;
    /** How many times a welcome (or `resumed`) arrived (1 on the first join). */
    this.joins = 0;
    /** How many of those joins resumed the event stream (no snapshot). */
    this.resumes = 0;
    /** The invite token this page was opened with (the key of its session token). */
    this.inviteToken = (typeof location !== 'undefined' && new URLSearchParams(location.search).get('token')) || opts.token;
    this.clock = new Clock();
    this.store = new MeetingStore();
    /** @type {WebSocket | null} */
    this._ws = null;
    this._nextId = 1;
    /** @type {Map<string, {resolve: (a: Ack) => void, reject: (e: ProtocolError) => void, type: string, timer: ReturnType<typeof setTimeout>}>} */
    this._pending = new Map();
    /** @type {Map<string, number>} ping id → client send time */
    this._pings = new Map();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._retryTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._pingTimer = null;
    this._stopped = false;
    /** @type {Record<string, number>} first time (performance.now()) each milestone was reached */
    this.marks = {};
    /** @type {string | undefined} the reason of the last `state` emitted */
    this._lastReason = undefined;
    this.mark('boot');
  }

  /**
   * Records the first time a milestone is reached (join-time measurements).
   * @param {string} name
   * @param {number} [at] when (`performance.now()`; default now)
   */
  mark(name, at = typeof performance !== 'undefined' ? performance.now() : undefined) {
    if (!(name in this.marks) && at !== undefined) this.marks[name] = Math.round(at);
  }

  /** Opens the connection (and keeps it open until {@link close}). */
  connect() {
    if (this.removed) return;
    this._stopped = false;
    if (this._ws) return;
    const early = takeEarlySocket(this.url);
    this.mark('ws_created', early?.at);
    const first = this.joins === 0 && this.attempts === 0;
    // A retry keeps the reason it was scheduled with (the banner says why it reconnects).
    this._setState(first ? 'connecting' : 'reconnecting', this.state === 'reconnecting' ? (this._lastReason ?? '') : this.closeReason);
    const ws = early?.ws ?? new WebSocket(this.url);
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.mark('ws_open');
      // After a first join the store holds the meeting up to `seq`: ask to resume from there
      // (the server answers `resumed` and the missed events, or a full `welcome`).
      /** @type {Record<string, unknown>} */
      const hello = { id: this._id('h'), type: 'hello', protocol: PROTOCOL_VERSION };
      if (this.joins > 0 && this.store.seq > 0) hello.resume_seq = this.store.seq;
      this._sendRaw(hello);
      this.mark('hello_sent');
    };
    /** @param {unknown} data */
    const onData = (data) => {
      if (typeof data !== 'string') return;
      /** @type {any} */
      let m;
      try {
        m = JSON.parse(data);
      } catch {
        return;
      }
      this._onMessage(ws, m);
    };
    ws.onmessage = (ev) => onData(ev.data);
    if (early && ws.readyState === WebSocket.OPEN) {
      // The page's inline script said hello already: replay what came since, in order. In a
      // microtask: after the page's own set-up (it calls connect() and then subscribes to the
      // events), before anything newer (that arrives in later tasks).
      opened = true;
      this.mark('ws_open', early.openAt);
      this.mark('hello_sent', early.helloAt);
      queueMicrotask(() => {
        for (const data of early.queue.splice(0)) onData(data);
      });
    }
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._stopPings();
      this._failPending('disconnected');
      // The close code alone says it too, should the goodbye have been lost.
      if (ev.code === CLOSE_CODES.removed && !this.removed) this._onGoodbye('removed');
      else if (ev.code === CLOSE_CODES.reconnect && this.closeReason !== 'reconnect') this._onGoodbye('reconnect');
      if (this._stopped) {
        this._setState('closed', this.closeReason || 'closed');
        return;
      }
      const why = this.closeReason || (opened ? `connection lost (code ${ev.code})` : 'cannot reach the server');
      this.closeReason = '';
      if (!opened && this.attempts >= 1) {
        // Never opened: maybe the invite itself is refused. Ask the server why.
        this._checkToken().then((refusal) => {
          if (refusal) {
            this._stopped = true;
            this.refusal = refusal;
            this._setState('closed', 'refused');
          } else {
            this._scheduleRetry(why);
          }
        });
        return;
      }
      this._scheduleRetry(why);
    };
  }

  /**
   * Closes for good (no reconnect).
   * @param {string} [reason]
   */
  close(reason = 'left') {
    this._stopped = true;
    this.closeReason = reason;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopPings();
    const ws = this._ws;
    if (ws) {
      ws.close(1000, reason.slice(0, 100));
    } else {
      this._setState('closed', reason);
    }
  }

  /**
   * Drops the websocket and reconnects at once (used after a media failure or a gap).
   * @param {string} reason
   */
  restart(reason) {
    if (this._stopped) return;
    this.closeReason = reason;
    const ws = this._ws;
    if (ws) ws.close(4001, reason.slice(0, 100));
    else this._scheduleRetry(reason);
  }

  /**
   * Sends a command; resolves with its `ack`, rejects with a {@link ProtocolError}.
   * Every rejection is also emitted as `command_error`, so a page can show it, unless `silent`
   * (background reports: their refusals are the sender's business, not the page's).
   * @param {string} type
   * @param {Record<string, unknown>} [fields]
   * @param {{silent?: boolean}} [opts]
   * @returns {Promise<Ack>}
   */
  send(type, fields = {}, opts = {}) {
    const id = this._id('c');
    return new Promise((resolve, reject) => {
      const fail = (/** @type {ProtocolError} */ e) => {
        if (!opts.silent) this.emit('command_error', e);
        reject(e);
      };
      const ws = this._ws;
      if (!ws || ws.readyState !== WebSocket.OPEN || this.state !== 'open') {
        fail(new ProtocolError('disconnected', 'not connected to the server', type));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(id);
        fail(new ProtocolError('timeout', 'the server did not answer in time', type));
      }, this.commandTimeoutMs);
      this._pending.set(id, { resolve, reject: fail, type, timer });
      this._sendRaw({ ...fields, id, type });
    });
  }

  /**
   * Sends a message that gets no ack of interest (media messages still get one; it is
   * awaited and errors are reported like any command).
   * @param {string} type
   * @param {Record<string, unknown>} fields
   */
  sendQuiet(type, fields) {
    this.send(type, fields).catch(() => {});
  }

  /** Sends a `ping` now. */
  ping() {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const id = this._id('p');
    const t0 = Date.now();
    this._pings.set(id, t0);
    this._sendRaw({ id, type: 'ping', client_time: t0 });
  }

  // --- internals

  /** @param {string} prefix */
  _id(prefix) {
    return `${prefix}${this._nextId++}`;
  }

  /** @param {object} m */
  _sendRaw(m) {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
  }

  /**
   * @param {ConnState} s
   * @param {string} reason
   */
  _setState(s, reason) {
    const changed = s !== this.state || reason !== this._lastReason;
    this.state = s;
    this._lastReason = reason;
    if (changed) this.emit('state', s, reason);
  }

  /** @param {string} why */
  _scheduleRetry(why) {
    if (this._stopped) return;
    const immediate = this._immediate;
    this._immediate = false;
    const n = immediate ? 0 : this.attempts++;
    const base = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(n, 10));
    const delay = n === 0 ? 0 : base / 2 + Math.random() * (base / 2);
    this._setState(this.joins === 0 && n === 0 ? 'connecting' : 'reconnecting', why);
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * A one-time invite's first connection gets a session token for its reconnects (and the
   * page's reloads, through sessionStorage): the invite link itself no longer works.
   * @param {string | undefined} t
   */
  _keepSessionToken(t) {
    if (!t || t === this.token) return;
    this.token = t;
    this.url = this.url.replace(/([?&]token=)[^&]*/, `$1${encodeURIComponent(t)}`);
    try {
      sessionStorage.setItem(`rt-session:${this.inviteToken}`, t);
    } catch {
      /* no storage (private mode): a reload will show "link used" */
    }
  }

  /**
   * Leaves on purpose: the server releases this participant's floor and requests at once
   * (a lost connection keeps them for the grace period), then the connection closes for good.
   * @returns {Promise<void>}
   */
  async leave() {
    try {
      await this.send('leave', {}, { silent: true });
    } catch {
      /* not connected: the grace period will release them */
    }
    this.close();
  }

  /**
   * A websocket that never opened: is the invite refused? `/api/token` checks the token as
   * `/ws` does (revoked, a used one-time link), with a JSON body on refusal.
   * @returns {Promise<TokenRefusal | null>} the refusal, or null when the token is fine (or unknown)
   */
  async _checkToken() {
    try {
      const r = await fetch(`/api/token?token=${encodeURIComponent(this.token)}`, { cache: 'no-store' });
      if (r.status === 401 || r.status === 404) {
        const body = await r.json().catch(() => ({}));
        return { code: String(body.code ?? r.status), message: String(body.message ?? 'invite refused') };
      }
    } catch {
      /* the server is down: keep trying */
    }
    return null;
  }

  _startPings() {
    this._stopPings();
    // A burst on joining (the best of them wins), then one now and then.
    for (let i = 0; i < 5; i++) setTimeout(() => this.ping(), i * 150);
    this._pingTimer = setInterval(() => this.ping(), this.pingEveryMs);
  }

  _stopPings() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
    this._pings.clear();
  }

  /**
   * What a goodbye means for reconnecting.
   * @param {GoodbyeReason} reason
   */
  _onGoodbye(reason) {
    this.goodbye = reason;
    if (reason === 'removed') {
      // The chair removed us: never reconnect, whatever the options (a reload tries again).
      this.removed = true;
      this._stopped = true;
      this.closeReason = 'removed';
      if (this._retryTimer) clearTimeout(this._retryTimer);
      this._retryTimer = null;
    } else if (reason === 'reconnect') {
      // The chair asked for a fresh start: reconnect at once, media restarts on the welcome.
      this._immediate = true;
      this.closeReason = 'reconnect';
    } else if (reason === 'replaced' && !this.reconnectForever) {
      // Someone opened this invite elsewhere: do not fight over it.
      this._stopped = true;
      this.closeReason = 'replaced';
    } else {
      this.closeReason = reason === 'shutdown' ? 'the server is restarting' : reason;
    }
    this.emit('goodbye', reason);
  }

  /** @param {string} code */
  _failPending(code) {
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError(code, 'the connection closed before the server answered', p.type));
      this._pending.delete(id);
    }
  }

  /**
   * @param {WebSocket} ws
   * @param {any} m
   */
  _onMessage(ws, m) {
    switch (m.type) {
      case 'welcome':
        this.mark('welcome');
        // When the server wrote it, on this page's clock (meaningful when both share a clock:
        // tests on one machine): tells the server's time from the page's own delays.
        if (typeof performance !== 'undefined') this.mark('welcome_server_time', performance.now() - (Date.now() - m.server_time));
        this.attempts = 0;
        this.joins++;
        this.goodbye = '';
        this.clock.rough(m.server_time, Date.now());
        // Media first (`joined`: the subscription is asked for before any page renders),
        // then the store and the pages.
        this._keepSessionToken(m.session_token);
        this.store.iceServers = m.ice_servers ?? [];
        this._setState('open', '');
        this.emit('joined', m);
        this.store.applyWelcome(m);
        this._startPings();
        this.emit('welcome', m);
        break;
      case 'resumed':
        // The store stays: the missed events follow this message, then the live ones.
        this.mark('welcome');
        this.attempts = 0;
        this.joins++;
        this.resumes++;
        this.goodbye = '';
        this.clock.rough(m.server_time, Date.now());
        this._keepSessionToken(m.session_token);
        this.store.you = m.you;
        this.store.iceServers = m.ice_servers ?? [];
        this._setState('open', '');
        this.emit('joined', m);
        this._startPings();
        this.emit('resumed', m);
        break;
      case 'event':
        if (!this.store.applyEvent(m)) {
          this.restart('missed events: rejoining');
        }
        break;
      case 'ack': {
        const p = this._pending.get(m.id);
        if (p) {
          clearTimeout(p.timer);
          this._pending.delete(m.id);
          p.resolve(m);
        }
        break;
      }
      case 'error': {
        const p = m.id ? this._pending.get(m.id) : undefined;
        if (p) {
          clearTimeout(p.timer);
          this._pending.delete(m.id);
          p.reject(new ProtocolError(m.code, m.message, p.type));
        } else if (m.code === 'journal_unavailable' || (m.id && m.id.startsWith('h'))) {
          this.emit('command_error', new ProtocolError(m.code, m.message, 'hello'));
        } else {
          this.emit('command_error', new ProtocolError(m.code, m.message));
        }
        break;
      }
      case 'pong': {
        const t0 = this._pings.get(m.id);
        if (t0 !== undefined) {
          this._pings.delete(m.id);
          this.clock.sample(t0, Date.now(), m.server_time);
          this.emit('clock', this.clock);
        }
        break;
      }
      case 'goodbye':
        this._onGoodbye(m.reason);
        break;
      case 'publish_answer':
        this.mark('publish_answer');
        this.emit('publish_answer', m);
        break;
      case 'subscribe_offer':
        this.mark('subscribe_offer');
        this.emit('subscribe_offer', m);
        break;
      case 'subscribe_slots':
        this.emit('subscribe_slots', m);
        break;
      case 'ice_candidate':
        this.emit('ice_candidate', m);
        break;
      case 'health':
        // Technicians, every 2 s: the store keeps it and its alerts.
        this.store.applyHealth(m);
        this.emit('health', m);
        break;
      case 'alert': {
        // Raised, cleared or acknowledged (technicians; floor alerts also the chair).
        const isNew = this.store.applyAlert(m.alert);
        this.emit('alert', m.alert, isNew);
        break;
      }
    }
    this.emit('message', m);
    void ws;
  }
}

// ---------------------------------------------------------------------------------------------
// Media

/**
 * Simulcast layers for a camera or the room camera (the server's rids: q, h, f).
 * @type {RTCRtpEncodingParameters[]}
 */
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * Whether a slot carries video (a participant's video track, the speaker or the screen slot).
 * @param {SlotInfo} sl
 */
function isVideo(sl) {
  return sl.slot === 'speaker' || sl.slot === 'screen' || (sl.slot === 'track' && sl.kind === 'video');
}

/**
 * Sends trickled candidates of one peer connection; queues the server's until the remote
 * description is set.
 */
class Trickle {
  /**
   * @param {Connection} conn
   * @param {RTCPeerConnection} pc
   * @param {'publish'|'subscribe'} kind
   */
  constructor(conn, pc, kind) {
    this.conn = conn;
    this.pc = pc;
    this.kind = kind;
    /** Local candidates wait until the server knows the connection. */
    this.ready = false;
    /** @type {{candidate: string, sdp_mid?: string|null, sdp_m_line_index?: number|null}[]} */
    this.outbox = [];
    /** @type {RTCIceCandidateInit[]} */
    this.inbox = [];
    pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      const m = c
        ? { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_m_line_index: c.sdpMLineIndex }
        : { candidate: '' };
      if (c && !c.candidate) return;
      if (this.ready) this._send(m);
      else this.outbox.push(m);
    };
  }
  /** @param {{candidate: string, sdp_mid?: string|null, sdp_m_line_index?: number|null}} m */
  _send(m) {
    /** @type {Record<string, unknown>} */
    const fields = { pc: this.kind, candidate: m.candidate };
    if (m.sdp_mid != null) fields.sdp_mid = m.sdp_mid;
    if (m.sdp_m_line_index != null) fields.sdp_m_line_index = m.sdp_m_line_index;
    this.conn.sendQuiet('ice_candidate', fields);
  }
  /** The server knows this connection now: send what waited. */
  flush() {
    this.ready = true;
    for (const m of this.outbox.splice(0)) this._send(m);
  }
  /** @param {{candidate: string, sdp_mid?: string, sdp_m_line_index?: number}} m */
  async remote(m) {
    /** @type {RTCIceCandidateInit} */
    const init = m.candidate
      ? { candidate: m.candidate, sdpMid: m.sdp_mid ?? null, sdpMLineIndex: m.sdp_m_line_index ?? null }
      : { candidate: '', sdpMid: m.sdp_mid ?? '0', sdpMLineIndex: m.sdp_m_line_index ?? 0 };
    if (!this.pc.remoteDescription) {
      this.inbox.push(init);
      return;
    }
    await this.pc.addIceCandidate(init).catch(() => {});
  }
  async drain() {
    for (const c of this.inbox.splice(0)) await this.pc.addIceCandidate(c).catch(() => {});
  }
}

/**
 * @typedef {object} PublishTrackSpec
 * @property {MediaStreamTrack} track
 * @property {MediaSource} source
 * @property {boolean} [simulcast] video only: send q/h/f layers
 */

/**
 * The publish connection: the client offers its tracks once (the server cannot take a
 * renegotiated simulcast offer yet, docs/MEDIA-NOTES.md), with `publish` naming each mid.
 */
export class Publisher {
  /**
   * @param {Connection} conn
   * @param {RTCConfiguration} [config]
   */
  constructor(conn, config = {}) {
    this.conn = conn;
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...config });
    this.trickle = new Trickle(conn, this.pc, 'publish');
    /** @type {Map<MediaSource, RTCRtpSender>} */
    this.senders = new Map();
    /** @type {{mid: string, source: MediaSource}[]} what `publish` names (again at an ICE restart) */
    this.tracks = [];
    /** Some video goes out in simulcast layers. */
    this.simulcast = false;
    /** @type {(() => void)[]} */
    this._off = [];
    this._off.push(conn.on('ice_candidate', (m) => {
      if (m.pc === 'publish') void this.trickle.remote(m);
    }));
  }

  /**
   * Offers the tracks and applies the server's answer.
   * @param {PublishTrackSpec[]} specs
   * @param {MediaStream} stream the stream the tracks belong to (one msid)
   */
  async publish(specs, stream) {
    this.simulcast = specs.some((s) => s.track.kind === 'video' && s.simulcast);
    /** @type {{t: RTCRtpTransceiver, source: MediaSource}[]} */
    const list = [];
    for (const s of specs) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: 'sendonly', streams: [stream] };
      if (s.track.kind === 'video' && s.simulcast) init.sendEncodings = SIMULCAST.map((e) => ({ ...e }));
      const t = this.pc.addTransceiver(s.track, init);
      this.senders.set(s.source, t.sender);
      list.push({ t, source: s.source });
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.tracks = list.map(({ t, source }) => ({ mid: /** @type {string} */ (t.mid), source }));
    await this._offer(offer);
  }

  /**
   * Restarts ICE on this connection (new credentials, same tracks, DTLS and SRTP kept): a new
   * offer as a `publish` naming the same mids, which the server answers with new credentials
   * of its own. Not for a simulcast connection: the server's media stack drops the layers on
   * a renegotiation (docs/MEDIA-NOTES.md), so {@link MediaSession} publishes those afresh.
   */
  async restartIce() {
    // The new candidates wait for the new offer: the server must not add them to the old session.
    this.trickle.ready = false;
    this.pc.restartIce();
    const offer = await this.pc.createOffer({ iceRestart: true });
    await this.pc.setLocalDescription(offer);
    await this._offer(offer);
  }

  /** Sends the local offer as `publish` and applies the answer. @param {RTCSessionDescriptionInit} offer */
  async _offer(offer) {
    const answered = new Promise((resolve) => {
      const off = this.conn.on('publish_answer', (m) => {
        if (m.pc && m.pc !== 'publish') return;
        off();
        resolve(m.sdp);
      });
      this._off.push(off);
    });
    await this.conn.send('publish', { sdp: this.pc.localDescription?.sdp ?? offer.sdp, tracks: this.tracks });
    const sdp = /** @type {string} */ (await answered);
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    await this.trickle.drain();
    this.trickle.flush();
  }

  close() {
    for (const off of this._off) off();
    this._off = [];
    this.pc.close();
  }
}

/**
 * @typedef {object} ReceivedTrack
 * @property {string} mid
 * @property {SlotInfo} slot
 * @property {MediaStreamTrack} track
 * @property {MediaStream} stream
 */

/** @typedef {{track: [ReceivedTrack], slots: [SlotInfo[]], first_frame: [string]}} SubscriberEvents */

/**
 * The subscribe connection: the server offers (first after `media_preferences`, again when
 * participants with tracks arrive), the client answers. `slots` say what each mid carries.
 * @extends {Emitter<SubscriberEvents>}
 */
export class Subscriber extends Emitter {
  /**
   * @param {Connection} conn
   * @param {RTCConfiguration} [config]
   */
  constructor(conn, config = {}) {
    super();
    this.conn = conn;
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...config });
    this.trickle = new Trickle(conn, this.pc, 'subscribe');
    /** @type {Map<string, SlotInfo>} slot by mid */
    this.slots = new Map();
    /** @type {Map<string, ReceivedTrack>} */
    this.tracks = new Map();
    this.thumbnails = false;
    /** @type {Map<string, number>} the height each mid is shown at (wanted), by mid */
    this.render = new Map();
    /** @type {Map<string, number>} the height asked of the server now (layer control), by mid */
    this.current = new Map();
    /** Start new video mids on a lower layer ({@link watchLayers}). */
    this.startLow = false;
    /** @type {Set<string>} mids a render height was ever sent for */
    this._sentRender = new Set();
    /**
     * The height new video mids start at: the middle layer. (The low layer would be the
     * surest, but the server's keyframe requests for it do not reach Chrome: its `pliCount`
     * stays 0, so the first frame waits for a keyframe Chrome sends on its own.)
     */
    this.startHeight = 360;
    /** @type {Promise<void>} offers are handled one at a time */
    this._chain = Promise.resolve();
    /** @type {ReceivedTrack[] | null} tracks waiting for the answer to go out */
    this._held = null;
    /** @type {(() => void)[]} */
    this._off = [];
    this.pc.ontrack = (ev) => {
      conn.mark(`track_${ev.track.kind}`);
      const mid = ev.transceiver.mid ?? '';
      const stream = ev.streams[0] ?? new MediaStream([ev.track]);
      const slot = this.slots.get(mid) ?? { slot: 'speaker', mid };
      const rt = { mid, slot, track: ev.track, stream };
      this.tracks.set(mid, rt);
      // While an answer is being made, the page hears of the track once it is sent (its
      // handlers build elements: not on the way to the answer).
      if (this._held) this._held.push(rt);
      else this.emit('track', rt);
    };
    this._off.push(conn.on('subscribe_offer', (m) => {
      this._chain = this._chain.then(() => this._onOffer(m.sdp, m.slots)).catch((e) => {
        console.error('roundtable: subscribe offer failed', e);
      });
    }));
    // A quiet m-line handed to a newcomer's track: relabel, no renegotiation.
    this._off.push(conn.on('subscribe_slots', (m) => {
      this._chain = this._chain.then(() => this._relabel(m.slots));
    }));
    this._off.push(conn.on('ice_candidate', (m) => {
      if (m.pc === 'subscribe') void this.trickle.remote(m);
    }));
  }

  /**
   * Opens the subscription (the first `media_preferences`).
   * @param {{thumbnails?: boolean}} [prefs]
   */
  async start(prefs = {}) {
    this.thumbnails = prefs.thumbnails ?? false;
    // Sent synchronously (before the first await): nothing else goes out before it.
    const acked = this.conn.send('media_preferences', { thumbnails: this.thumbnails });
    this.conn.mark('media_preferences_sent');
    await acked;
  }

  /**
   * Tells the server the height a received video mid is shown at (0: not shown), so it
   * forwards the smallest simulcast layer that covers it.
   * @param {Record<string, number>} heights by mid
   */
  async setRender(heights) {
    for (const [mid, hgt] of Object.entries(heights)) {
      const v = Math.round(hgt);
      this.render.set(mid, v);
      // Asking lower is always safe; higher goes through the layer control's probe.
      const cur = this.current.get(mid);
      if (!this.startLow || cur === undefined || v < cur) this.current.set(mid, v);
    }
    await this._sendRender();
  }

  /**
   * What every live m-line carries now (`subscribe_slots`).
   * @param {SlotInfo[]} slots
   */
  _relabel(slots) {
    this.slots.clear();
    for (const s of slots) this.slots.set(s.mid, s);
    for (const [mid, rt] of this.tracks) {
      const s = this.slots.get(mid);
      if (s) rt.slot = s;
    }
    this.emit('slots', slots);
  }

  /**
   * @param {string} sdp
   * @param {SlotInfo[]} slots
   */
  async _onOffer(sdp, slots) {
    for (const s of slots) this.slots.set(s.mid, s);
    // Tracks already received keep their mids; refresh what they carry.
    for (const [mid, rt] of this.tracks) {
      const s = this.slots.get(mid);
      if (s) rt.slot = s;
    }
    this.emit('slots', slots);
    if (this.startLow) {
      let fresh = false;
      for (const sl of slots) {
        const video = sl.slot === 'speaker' || (sl.slot === 'track' && sl.kind === 'video');
        if (video && !this.current.has(sl.mid)) {
          this.current.set(sl.mid, this.startHeight);
          fresh = true;
        }
      }
      // Before the answer, and not waited for: the websocket keeps the order, so the server
      // applies the heights before the answer, and the answer does not wait a round trip.
      if (fresh) void this._sendRender();
    } else if ([...this.render.keys()].some((mid) => slots.some((sl) => sl.mid === mid))) {
      void this._sendRender();
    }
    this._held = [];
    /** @type {Promise<Ack> | null} */
    let acked = null;
    try {
      await this.pc.setRemoteDescription({ type: 'offer', sdp });
      await this.trickle.drain();
      const answer = await this.pc.createAnswer();
      // Candidates of this answer (new ones at an ICE restart) follow it, never precede it.
      this.trickle.ready = false;
      await this.pc.setLocalDescription(answer);
      acked = this.conn.send('subscribe_answer', { sdp: this.pc.localDescription?.sdp ?? answer.sdp });
      this.conn.mark('subscribe_answer_sent');
    } finally {
      const held = this._held ?? [];
      this._held = null;
      for (const rt of held) this.emit('track', rt);
    }
    await acked;
    this.conn.mark('subscribe_answered');
    this.trickle.flush();
  }

  /**
   * The first frame, fast: for every video mid of the first offer, the layer whose keyframe
   * comes soonest is asked for the moment this connection is up, and the mid goes back to the
   * page's height (or the slot's default) once its first frame is decoded.
   *
   * Why (measured, tests/e2e/README.md): the server asks the publisher for a keyframe when a
   * slot's layer changes. Asked before this connection is up (at the offer, or by a render
   * height sent with the answer), the keyframe arrives before DTLS and is lost, and the next
   * request waits out the server's 1 s throttle; the slot's default, the high layer, is often
   * paused by a bandwidth-limited publisher, whose keyframe requests it then ignores. So nothing
   * is asked before the answer; at `connected`, each mid still without a frame is asked for
   * `height` (default 360, the middle layer, or the page's height if smaller): a change of layer
   * made now gets a keyframe request that is not lost, and Chrome answers it within ~50 ms.
   * Afterwards the server's own fallback (from a paused layer) takes over.
   * If no frame has come `retryMs` (250 ms) after asking, the other layer (180, or 360) is
   * asked, and so on in turn: the publisher's Chrome ignores keyframe requests within ~300 ms
   * of its last keyframe (often the one the server asked for before this connection was up),
   * and the server repeats a request only after 1 s; a request for another layer goes out at once.
   * @param {{height?: number, everyMs?: number, giveUpMs?: number, retryMs?: number}} [opts]
   * @returns {() => void} stops
   */
  kickstart(opts = {}) {
    const height = opts.height ?? 360;
    const everyMs = opts.everyMs ?? 50;
    const giveUpMs = opts.giveUpMs ?? 10000;
    const retryMs = opts.retryMs ?? 250;
    /** The layer asked for when the first one brings no frame in `retryMs`. */
    const other = height > 180 ? 180 : 360;
    let flip = false;
    let askedAt = 0;
    /** @type {Set<string>} video mids of the first offer still without a frame */
    const waiting = new Set();
    let offered = false;
    let started = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let timer = null;
    let stopped = false;
    const offOffer = this.on('slots', (slots) => {
      if (offered) return;
      offered = true;
      for (const sl of slots) if (isVideo(sl)) waiting.add(sl.mid);
    });
    const done = () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      offOffer();
      this.pc.removeEventListener('connectionstatechange', onState);
    };
    /** Back to the page's height (or the slot's default) for these mids. @param {string[]} mids */
    const release = (mids) => {
      if (!mids.length) return;
      for (const mid of mids) {
        waiting.delete(mid);
        this.current.delete(mid);
      }
      void this._sendRender();
    };
    const tick = async () => {
      timer = null;
      if (stopped || this.pc.connectionState === 'closed') return;
      const report = await this.pc.getStats().catch(() => null);
      if (stopped) return;
      /** @type {string[]} */
      const decoded = [];
      report?.forEach((st) => {
        if (st.type === 'inbound-rtp' && st.kind === 'video' && st.mid && waiting.has(st.mid) && (st.framesDecoded ?? 0) > 0) decoded.push(st.mid);
      });
      if (decoded.length) this.conn.mark('first_frame');
      for (const mid of decoded) this.emit('first_frame', mid);
      release(decoded);
      if (Date.now() - started > giveUpMs) release([...waiting]);
      else if (waiting.size && Date.now() - askedAt >= retryMs) {
        // No frame yet: the publisher ignored the request (Chrome drops keyframe requests that
        // come within ~300 ms of its last keyframe, and the server repeats only after 1 s).
        // Asking the other layer makes the server send a new request at once.
        flip = !flip;
        ask(flip ? other : height);
      }
      if (waiting.size === 0) done();
      else timer = setTimeout(() => void tick(), everyMs);
    };
    /** Asks every waiting mid for `hgt` (or the page's height if smaller). @param {number} hgt */
    const ask = (hgt) => {
      askedAt = Date.now();
      let changed = false;
      for (const mid of waiting) {
        const own = this.render.get(mid);
        const h = own !== undefined && own > 0 ? Math.min(own, hgt) : hgt;
        if (this.current.get(mid) !== h) {
          this.current.set(mid, h);
          changed = true;
        }
      }
      if (changed) void this._sendRender();
    };
    const onState = () => {
      if (this.pc.connectionState !== 'connected' || started) return;
      started = Date.now();
      ask(height);
      void tick();
    };
    this.pc.addEventListener('connectionstatechange', onState);
    return done;
  }

  /**
   * Simulcast layer control on the client side, until the server falls back by itself.
   *
   * The server forwards the layer a render height asks for (default: the high one) and keeps
   * it even when the publisher's browser pauses that layer for lack of bandwidth (Chrome
   * does: `qualityLimitationReason: bandwidth`), so the picture freezes. Here:
   * - every new video mid starts on the low layer (180, always sent: the first frame comes
   *   soonest); once it decodes, it steps up one layer at a time (360, 720) towards the
   *   wanted height ({@link setRender}, default 720). Asking up is safe: the server keeps
   *   forwarding the current layer until the target's keyframe arrives. If the frame height
   *   has not changed `switchMs` after a step up, the layer is not coming: back down, and try
   *   again after `probeMs`;
   * - a mid that stops decoding for `stallMs` is asked for the next lower height.
   * @param {{stallMs?: number, probeMs?: number, switchMs?: number, everyMs?: number}} [opts]
   * @returns {() => void} stops watching
   */
  watchLayers(opts = {}) {
    const stallMs = opts.stallMs ?? 2000;
    const probeMs = opts.probeMs ?? 8000;
    const switchMs = opts.switchMs ?? 2500;
    const steps = [180, 360, 720];
    this.startLow = true;
    /**
     * Per mid: frames decoded and when they last grew; a pending step up (asked from which
     * height, with which frame height arriving then, when).
     * @type {Map<string, {frames: number, progressAt: number, probedAt: number,
     *   ask?: {from: number, height: number, at: number}}>}
     */
    const seen = new Map();
    const tick = async () => {
      if (this.pc.connectionState === 'closed') return;
      const report = await this.pc.getStats().catch(() => null);
      if (!report) return;
      const now = Date.now();
      /** @type {Map<string, {frames: number, height: number}>} by mid */
      const got = new Map();
      report.forEach((st) => {
        if (st.type === 'inbound-rtp' && st.kind === 'video' && st.mid) {
          got.set(st.mid, { frames: st.framesDecoded ?? 0, height: st.frameHeight ?? 0 });
        }
      });
      let changed = false;
      for (const [mid, slot] of this.slots) {
        const video = slot.slot === 'speaker' || (slot.slot === 'track' && slot.kind === 'video');
        if (!video) continue;
        const wanted = this.render.get(mid) ?? 720;
        if (wanted === 0) continue;
        const cur = this.current.get(mid) ?? wanted;
        const g = got.get(mid) ?? { frames: 0, height: 0 };
        let x = seen.get(mid);
        if (!x) {
          x = { frames: g.frames, progressAt: now, probedAt: 0 };
          seen.set(mid, x);
        }
        if (g.frames > x.frames) {
          x.frames = g.frames;
          x.progressAt = now;
          if (x.ask) {
            if (now - x.ask.at > switchMs) {
              if (g.height === x.ask.height) {
                // The layer asked for is not coming (paused by the sender): back down.
                this.current.set(mid, x.ask.from);
                x.probedAt = now;
                changed = true;
              }
              x.ask = undefined;
            }
          } else if (cur < wanted && (x.probedAt === 0 || now - x.probedAt > probeMs)) {
            const up = steps.find((hgt) => hgt > cur) ?? wanted;
            this.current.set(mid, Math.min(up, wanted));
            x.ask = { from: cur, height: g.height, at: now };
            x.probedAt = x.probedAt === 0 ? 0 : now;
            changed = true;
          }
        } else if (now - x.progressAt > stallMs) {
          // The layer in use stopped: one step down.
          const lower = [...steps].reverse().find((hgt) => hgt < cur);
          x.progressAt = now;
          x.ask = undefined;
          if (lower !== undefined) {
            this.current.set(mid, lower);
            x.probedAt = now;
            changed = true;
          }
        }
      }
      if (changed) await this._sendRender();
    };
    const t = setInterval(() => void tick(), opts.everyMs ?? 500);
    return () => clearInterval(t);
  }

  /** Sends the heights in force (`current`, else the wanted ones). */
  async _sendRender() {
    /** @type {{mid: string, height: number}[]} */
    const render = [];
    for (const [mid, slot] of this.slots) {
      const hgt = this.current.get(mid) ?? this.render.get(mid);
      if (hgt !== undefined) render.push({ mid, height: hgt });
      // A mid that had a height and has none now goes back to the slot's default (0).
      else if (this._sentRender.has(mid) && isVideo(slot)) render.push({ mid, height: 0 });
    }
    for (const r of render) this._sentRender.add(r.mid);
    await this.conn.send('media_preferences', { thumbnails: this.thumbnails, render }).catch(() => {});
  }

  close() {
    for (const off of this._off) off();
    this._off = [];
    this.pc.close();
  }
}

/**
 * @typedef {object} MediaSessionOptions
 * @property {() => Promise<PublishTrackSpec[]> | PublishTrackSpec[]} [tracks] what to publish
 *   (asked again at every restart); none: receive only
 * @property {boolean} [subscribe] open the subscribe connection (default true)
 * @property {boolean} [thumbnails]
 * @property {number} [connectTimeoutMs] a connection not up by then counts as failed (default 15000)
 * @property {boolean} [layerFallback] the client-side layer control of
 *   {@link Subscriber.watchLayers} (start low, step up, step down on a stall); default
 *   {@link MEDIA_DEFAULTS}`.layerFallback` (off: the server falls back by itself now)
 * @property {boolean} [fastStart] {@link Subscriber.kickstart}: the middle layer asked for at
 *   `connected` until the first frame (default {@link MEDIA_DEFAULTS}`.fastStart`, on; not
 *   with `layerFallback`)
 * @property {boolean} [reportStats] send `client_stats` every 2 s ({@link StatsReporter};
 *   default true)
 * @property {number} [iceRestartAfterMs] a connection `disconnected` this long restarts ICE
 *   (default 3000; `failed` restarts at once)
 * @property {number} [iceRestartTimeoutMs] an ICE restart not connected by then counts as
 *   failed: the page reconnects in full (default 10000)
 */

/**
 * Defaults of every {@link MediaSession}. `globalThis.__rtMediaDefaults` (set before the page's
 * modules run, e.g. by a test's init script) overrides them: a diagnostic knob for comparing
 * the layer strategies, not a setting.
 * @type {{layerFallback: boolean, fastStart: boolean, firstFrameHeight: number}}
 */
export const MEDIA_DEFAULTS = {
  layerFallback: false,
  fastStart: true,
  firstFrameHeight: 360,
  .../** @type {any} */ (globalThis).__rtMediaDefaults,
};

/**
 * @typedef {{
 *   track: [ReceivedTrack],
 *   slots: [SlotInfo[]],
 *   state: ['idle'|'connecting'|'connected'|'reconnecting'|'failed'|'closed', string],
 *   failed: [string],
 *   first_frame: [string],
 * }} MediaSessionEvents
 */

/**
 * Both peer connections of a participant, restarted afresh after every `welcome`.
 *
 * A connection whose ICE goes `failed`, or stays `disconnected` for `iceRestartAfterMs`
 * (the network changed, Wi-Fi dropped), is recovered by an ICE restart first
 * ({@link restartIce}: state `reconnecting`), the peer connections and their tracks kept.
 * Only when that does not connect in `iceRestartTimeoutMs` (or cannot be tried: the websocket
 * is down) is the session reported `failed`; the page decides (the pages reconnect in full:
 * {@link Connection.restart}).
 * @extends {Emitter<MediaSessionEvents>}
 */
export class MediaSession extends Emitter {
  /**
   * @param {Connection} conn
   * @param {MediaSessionOptions} opts
   */
  constructor(conn, opts) {
    super();
    this.conn = conn;
    this.opts = opts;
    /** @type {Publisher | null} */
    this.publisher = null;
    /** @type {Subscriber | null} */
    this.subscriber = null;
    /** @type {MediaStream | null} the published stream */
    this.stream = null;
    this.state = /** @type {'idle'|'connecting'|'connected'|'reconnecting'|'failed'|'closed'} */ ('idle');
    this._gen = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    /** @type {PublishTrackSpec[]} what the publish connection sends (sent again when republished) */
    this._specs = [];
    /** ICE restarts begun (this page's life), and the one under way. */
    this.iceRestarts = 0;
    /** @type {{gen: number, timer: ReturnType<typeof setTimeout>} | null} */
    this._recovering = null;
    /** `client_stats` every 2 s, from the first connection on (off: `reportStats: false`). */
    this.reporter = new StatsReporter(this);
    // `joined` comes before the pages render the welcome: the subscription goes out first.
    // A resume within the grace period keeps the peer connections (the server held its side).
    this._offWelcome = conn.on('joined', (m) => {
      if (m.type === 'resumed' && m.media_held && (this.subscriber || this.publisher)) this._resumeMedia();
      else void this.restart();
    });
    this._offState = conn.on('state', (s) => {
      if (s === 'closed') this._teardown('closed');
      // The websocket is down: the peer connections stay (media may well still flow), and no
      // failure is acted on until the server says whether it kept its side (`resumed`).
      else if (s === 'reconnecting') this._pause();
    });
    if (conn.state === 'open') void this.restart();
  }

  /** @param {'idle'|'connecting'|'connected'|'reconnecting'|'failed'|'closed'} s @param {string} why */
  _set(s, why = '') {
    this.state = s;
    this.emit('state', s, why);
  }

  /** No deadline runs while the websocket is down. */
  _pause() {
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    if (this._recovering) clearTimeout(this._recovering.timer);
    this._recovering = null;
  }

  /**
   * Resumed with media held: the server re-offers the subscribe connection with new ICE
   * credentials on its own; a sending connection not connected now restarts. Not all
   * connected within `iceRestartTimeoutMs`: `failed`.
   */
  _resumeMedia() {
    const gen = this._gen;
    this.conn.mark('media_held');
    const pub = this.publisher?.pc;
    const stale = pub !== undefined && (pub.connectionState !== 'connected' ||
      (pub.iceConnectionState !== 'connected' && pub.iceConnectionState !== 'completed'));
    this._expect(gen);
    if (stale) {
      this.iceRestarts++;
      this.conn.mark('ice_restart');
      this._set('reconnecting', 'resumed');
      this._restartPublisher(gen).catch((e) => this._fail(gen, e));
    }
    this._check(gen);
  }

  /**
   * A recovery under way: connected again within `iceRestartTimeoutMs`, or `failed`.
   * @param {number} gen
   */
  _expect(gen) {
    if (this._recovering) clearTimeout(this._recovering.timer);
    const timer = setTimeout(() => {
      if (gen !== this._gen || this._recovering?.timer !== timer) return;
      this._recovering = null;
      this._fail(gen, new Error('ICE restart did not reconnect'));
    }, this.opts.iceRestartTimeoutMs ?? 10000);
    this._recovering = { gen, timer };
    return timer;
  }

  /** @param {'idle'|'closed'} to */
  _teardown(to) {
    this._gen++;
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    if (this._recovering) clearTimeout(this._recovering.timer);
    this._recovering = null;
    this.publisher?.close();
    this.subscriber?.close();
    this.publisher = null;
    this.subscriber = null;
    if (this.state !== to) this._set(to);
  }

  /**
   * Closes both connections and opens them again: the subscription first (its
   * `media_preferences` leaves before anything else), the publish side beside it, neither
   * waiting for the other.
   */
  async restart() {
    this._teardown('idle');
    const gen = this._gen;
    this._set('connecting');
    /** @type {Promise<void>[]} */
    const jobs = [];
    if (this.opts.subscribe !== false) jobs.push(this._subscribe(gen));
    jobs.push(this._publish(gen));
    try {
      await Promise.all(jobs);
    } catch (e) {
      this._fail(gen, e);
      return;
    }
    this._arm(gen);
  }

  /** @param {number} gen */
  async _subscribe(gen) {
    // The request first: the server prepares its offer while this page builds the peer
    // connection (the offer cannot arrive before this task ends, so nothing is missed).
    const thumbnails = this.opts.thumbnails ?? false;
    const asked = this.conn.send('media_preferences', { thumbnails });
    this.conn.mark('media_preferences_sent');
    const sub = new Subscriber(this.conn, this._config());
    sub.thumbnails = thumbnails;
    this.subscriber = sub;
    this._report();
    sub.on('track', (t) => this.emit('track', t));
    sub.on('slots', (s) => this.emit('slots', s));
    sub.on('first_frame', (mid) => this.emit('first_frame', mid));
    this._watch(sub.pc, gen);
    const layers = this.opts.layerFallback ?? MEDIA_DEFAULTS.layerFallback;
    const fast = !layers && (this.opts.fastStart ?? MEDIA_DEFAULTS.fastStart);
    if (layers) sub.startLow = true;
    // Listening before the offer can come.
    const stop = layers ? sub.watchLayers() : fast ? sub.kickstart({ height: MEDIA_DEFAULTS.firstFrameHeight }) : () => {};
    const close = sub.close.bind(sub);
    sub.close = () => {
      stop();
      close();
    };
    await asked;
  }

  /**
   * Starts publishing now (if the tracks callback has something to send and nothing is
   * published yet), keeping the subscribe connection as it is: a delegate who watched the
   * room during the device check joins without a gap.
   */
  async publishNow() {
    const gen = this._gen;
    if (this.publisher || this.conn.state !== 'open') return;
    try {
      await this._publish(gen);
    } catch (e) {
      this._fail(gen, e);
      return;
    }
    this._arm(gen);
  }

  _config() {
    /** @type {RTCConfiguration} */
    const config = { iceServers: this.conn.store.iceServers.map((s) => ({ ...s })) };
    return config;
  }

  /** @param {number} gen @param {PublishTrackSpec[]} [again] republish these (no new ask) */
  async _publish(gen, again) {
    const specs = again ?? (this.opts.tracks ? await this.opts.tracks() : []);
    if (gen !== this._gen || !specs.length) return;
    this._specs = specs;
    const pub = new Publisher(this.conn, this._config());
    this.publisher = pub;
    this._report();
    this._watch(pub.pc, gen);
    const stream = new MediaStream(specs.map((s) => s.track));
    this.stream = stream;
    await pub.publish(specs, stream);
  }

  /** @param {number} gen @param {unknown} e */
  _fail(gen, e) {
    if (gen !== this._gen) return;
    const why = e instanceof Error ? e.message : String(e);
    this._set('failed', why);
    this.emit('failed', why);
  }

  /** The peer connections of this generation. */
  _pcs() {
    return [this.subscriber?.pc, this.publisher?.pc].filter((x) => x !== undefined);
  }

  /** @param {RTCPeerConnection} pc @param {number} gen */
  _watch(pc, gen) {
    const which = () => (pc === this.subscriber?.pc ? 'subscribe' : 'publish');
    pc.addEventListener('connectionstatechange', () => {
      this.conn.mark(`${which()}_${pc.connectionState}`);
      this._check(gen);
    });
    /** @type {ReturnType<typeof setTimeout> | null} */
    let quiet = null;
    pc.addEventListener('iceconnectionstatechange', () => {
      const s = pc.iceConnectionState;
      if (quiet) clearTimeout(quiet);
      quiet = null;
      // A short blip mends by itself (consent checks resume); a longer silence is a network
      // that changed under the connection: new credentials, new candidate pairs.
      if (s === 'disconnected') {
        quiet = setTimeout(() => {
          if (gen === this._gen && pc.iceConnectionState === 'disconnected') this._recover(gen, `${which()} disconnected`);
        }, this.opts.iceRestartAfterMs ?? 3000);
      }
    });
  }

  /** @param {number} gen */
  _check(gen) {
    if (gen !== this._gen) return;
    const states = this._pcs().map((pc) => pc.connectionState);
    if (states.some((s) => s === 'failed')) {
      // An ICE restart first; its own deadline decides if it does not work.
      if (!this._recovering) this._recover(gen, 'media connection failed');
    } else if (states.length && states.every((s) => s === 'connected')) {
      if (this._timer) clearTimeout(this._timer);
      this._timer = null;
      if (this._recovering) {
        clearTimeout(this._recovering.timer);
        this._recovering = null;
        this.conn.mark('ice_restart_done');
      }
      if (this.state !== 'connected') this._set('connected');
    } else if (this.state === 'connected') {
      this._set('connecting');
    }
  }

  /**
   * Recovers by an ICE restart, or reports `failed` if none can be tried now.
   * @param {number} gen @param {string} why
   */
  _recover(gen, why) {
    // The websocket is down: the resume decides (media held or not).
    if (gen !== this._gen || this._recovering || this.conn.state !== 'open') return;
    if (!this.restartIce(why)) this._fail(gen, new Error(why));
  }

  /**
   * Restarts ICE on the connections that are not connected (all of them with `all`): the
   * subscribe connection by `ice_restart` (the server re-offers with new credentials), a
   * sending one by `restartIce()` and a new `publish` offer; a simulcast sending connection
   * is published afresh instead (its layers would not survive a renegotiation). The tracks,
   * the peer connections' other state and the page's elements stay. Not connected within
   * `iceRestartTimeoutMs`: `failed`.
   * @param {string} why
   * @param {{all?: boolean}} [opts]
   * @returns {boolean} a restart began (false: the websocket is down, one is under way, or
   *   there is nothing to restart)
   */
  restartIce(why, opts = {}) {
    const gen = this._gen;
    if (this._recovering || this.conn.state !== 'open' || this.state === 'closed') return false;
    const stale = (/** @type {RTCPeerConnection | undefined} */ pc) =>
      pc !== undefined && pc.connectionState !== 'closed' && (opts.all || pc.connectionState !== 'connected' ||
        (pc.iceConnectionState !== 'connected' && pc.iceConnectionState !== 'completed'));
    const sub = stale(this.subscriber?.pc);
    const pub = stale(this.publisher?.pc);
    if (!sub && !pub) return false;
    this.iceRestarts++;
    this.conn.mark('ice_restart');
    console.info(`roundtable: ICE restart (${why}): ${[sub && 'subscribe', pub && 'publish'].filter(Boolean).join(', ')}`);
    const timer = this._expect(gen);
    this._set('reconnecting', why);
    /** @type {Promise<unknown>[]} */
    const jobs = [];
    if (sub) jobs.push(this.conn.send('ice_restart', { pc: 'subscribe' }));
    if (pub) jobs.push(this._restartPublisher(gen));
    Promise.all(jobs).then(
      () => this._check(gen),
      (e) => {
        if (gen !== this._gen || this._recovering?.timer !== timer) return;
        clearTimeout(timer);
        this._recovering = null;
        this._fail(gen, e);
      },
    );
    return true;
  }

  /** @param {number} gen */
  async _restartPublisher(gen) {
    const pub = this.publisher;
    if (!pub) return;
    if (!pub.simulcast) {
      await pub.restartIce();
      return;
    }
    // Published afresh: the old connection goes (its tracks leave the subscribers a moment).
    await this.conn.send('unpublish', { pc: 'publish' }).catch(() => {});
    pub.close();
    if (gen !== this._gen) return;
    this.publisher = null;
    await this._publish(gen, this._specs);
  }

  /** A connection not up in time counts as failed. @param {number} gen */
  _arm(gen) {
    if (gen !== this._gen) return;
    if (this._timer) clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      if (gen !== this._gen || this.state === 'connected') return;
      this._fail(gen, new Error('media did not connect in time'));
    }, this.opts.connectTimeoutMs ?? 15000);
    this._check(gen);
  }

  /** A peer connection exists: the stats reporter runs (unless turned off). */
  _report() {
    if (this.opts.reportStats !== false) this.reporter.start();
  }

  /** Stops media for good. */
  close() {
    this.reporter.stop();
    this._offWelcome();
    this._offState();
    this._teardown('closed');
  }
}

// ---------------------------------------------------------------------------------------------
// Stats

/**
 * @typedef {object} InboundSample
 * @property {string} mid
 * @property {'audio'|'video'} kind
 * @property {SlotInfo | undefined} slot
 * @property {number} bytesReceived
 * @property {number} packetsReceived
 * @property {number} framesDecoded video only (0 for audio)
 * @property {number} frameHeight
 * @property {number} jitter seconds
 * @property {number} packetsLost
 */

/**
 * @typedef {object} OutboundSample
 * @property {'audio'|'video'} kind
 * @property {string} mid
 * @property {string} [rid]
 * @property {number} bytesSent
 * @property {number} packetsSent
 * @property {number} frameHeight
 */

/**
 * @typedef {object} StatsSample
 * @property {number} at client time
 * @property {InboundSample[]} inbound
 * @property {OutboundSample[]} outbound
 * @property {number} [rttMs] current round trip on the selected candidate pair
 */

/**
 * Samples a media session: inbound per received mid (with its slot), outbound per layer.
 * @param {MediaSession} media
 * @returns {Promise<StatsSample>}
 */
export async function sampleStats(media) {
  /** @type {StatsSample} */
  const out = { at: Date.now(), inbound: [], outbound: [] };
  const sub = media.subscriber;
  if (sub) {
    const report = await sub.pc.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        const mid = s.mid ?? '';
        out.inbound.push({
          mid,
          kind: s.kind,
          slot: sub.slots.get(mid),
          bytesReceived: s.bytesReceived ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          frameHeight: s.frameHeight ?? 0,
          jitter: s.jitter ?? 0,
          packetsLost: s.packetsLost ?? 0,
        });
      } else if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
        out.rttMs = s.currentRoundTripTime * 1000;
      }
    });
  }
  const pub = media.publisher;
  if (pub) {
    const report = await pub.pc.getStats();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out.outbound.push({
          kind: s.kind,
          mid: s.mid ?? '',
          rid: s.rid,
          bytesSent: s.bytesSent ?? 0,
          packetsSent: s.packetsSent ?? 0,
          frameHeight: s.frameHeight ?? 0,
        });
      }
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Client stats: what this page tells the server of its own streams (`client_stats`)

/** The ranges the server takes (anything else is `invalid_value`). */
const LIMITS = Object.freeze({ fps: 240, height: 4320, kbps: 10_000_000, jitterBufferMs: 60_000, u32: 4_294_967_295 });

/** How bad each `qualityLimitationReason` is, to keep the worst of the layers. */
const LIMITATION_RANK = Object.freeze({ none: 0, other: 1, bandwidth: 2, cpu: 3 });

/** @type {ReadonlySet<string>} */
const CANDIDATE_TYPES = new Set(['host', 'srflx', 'prflx', 'relay']);

/**
 * A finite number clamped to `[lo, hi]` and rounded to `digits` decimals; undefined otherwise.
 * @param {unknown} x
 * @param {number} lo
 * @param {number} hi
 * @param {number} [digits]
 * @returns {number | undefined}
 */
function clampNum(x, lo, hi, digits = 0) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return undefined;
  const f = 10 ** digits;
  return Math.round(Math.min(hi, Math.max(lo, x)) * f) / f;
}

/**
 * An object without its undefined fields, or undefined when nothing is left.
 * @template {Record<string, unknown>} T
 * @param {T} o
 * @returns {T | undefined}
 */
function compact(o) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return Object.keys(out).length ? /** @type {T} */ (out) : undefined;
}

/**
 * The selected candidate pair of a peer connection's stats (the transport's, else a
 * nominated pair that succeeded).
 * @param {RTCStatsReport} report
 * @returns {any}
 */
function selectedPair(report) {
  /** @type {string | undefined} */
  let id;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) id = s.selectedCandidatePairId;
  });
  /** @type {any} */
  let pair = id ? report.get(id) : undefined;
  if (!pair) {
    report.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
    });
  }
  return pair;
}

/**
 * The local candidate type of a report's selected pair.
 * @param {RTCStatsReport | null} report
 * @returns {CandidateType | undefined}
 */
function candidateOf(report) {
  if (!report) return undefined;
  const pair = selectedPair(report);
  const local = pair?.localCandidateId ? report.get(pair.localCandidateId) : undefined;
  const t = local?.candidateType;
  return typeof t === 'string' && CANDIDATE_TYPES.has(t) ? /** @type {CandidateType} */ (t) : undefined;
}

/**
 * The jitter buffer counters of the main received video at the last summary, for a mean
 * over the period rather than since the start.
 * @typedef {{id: string, delay: number, count: number}} JitterMark
 */

/**
 * Builds the `client_stats` summary from the `getStats` reports of the subscribe and publish
 * connections (either may be null). Every value is checked, rounded and clamped to what the
 * server accepts; absent or non-finite values are left out.
 * - down: `freeze_count` summed over the received videos; `fps`, `height` and
 *   `jitter_buffer_ms` (jitterBufferDelay / jitterBufferEmittedCount over the period) of the
 *   main video (the room's program, else the tallest received video); `packets_lost` summed
 *   over every received stream; `audio_level` the loudest received audio;
 * - up: `quality_limitation` the worst of the video layers; `available_kbps` the selected
 *   pair's availableOutgoingBitrate; `fps`, `height` of the tallest layer being sent;
 *   `audio_level` of the microphone's media source;
 * - candidate: the local candidate type of the publish connection's selected pair (else the
 *   subscribe connection's).
 * @param {{sub: RTCStatsReport | null, pub: RTCStatsReport | null, slots?: Map<string, SlotInfo>,
 *   prev?: JitterMark | null}} input
 * @returns {{stats: ClientStats, mark: JitterMark | null}}
 */
export function summarizeStats({ sub, pub, slots = new Map(), prev = null }) {
  /** @type {ClientStats} */
  const stats = {};
  /** @type {JitterMark | null} */
  let mark = null;
  if (sub) {
    let freezes = 0;
    let anyFreeze = false;
    let lost = 0;
    let anyLost = false;
    /** @type {number | undefined} */
    let level;
    /** @type {any} */
    let program;
    /** @type {any} */
    let tallest;
    sub.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (typeof s.packetsLost === 'number' && Number.isFinite(s.packetsLost)) {
        lost += Math.max(0, s.packetsLost);
        anyLost = true;
      }
      if (s.kind === 'audio') {
        if (typeof s.audioLevel === 'number' && Number.isFinite(s.audioLevel)) level = Math.max(level ?? 0, s.audioLevel);
        return;
      }
      if (s.kind !== 'video') return;
      if (typeof s.freezeCount === 'number' && Number.isFinite(s.freezeCount)) {
        freezes += s.freezeCount;
        anyFreeze = true;
      }
      const slot = slots.get(s.mid ?? '');
      if (slot?.slot === 'track' && slot.source === 'program' && (s.framesDecoded ?? 0) > 0) program = s;
      if ((s.frameHeight ?? 0) > 0 && (!tallest || s.frameHeight > tallest.frameHeight)) tallest = s;
    });
    const main = program ?? tallest;
    /** @type {number | undefined} */
    let jb;
    if (main && typeof main.jitterBufferDelay === 'number' && typeof main.jitterBufferEmittedCount === 'number') {
      const id = String(main.id);
      const same = prev && prev.id === id && main.jitterBufferEmittedCount >= prev.count;
      const dDelay = same ? main.jitterBufferDelay - prev.delay : main.jitterBufferDelay;
      const dCount = same ? main.jitterBufferEmittedCount - prev.count : main.jitterBufferEmittedCount;
      if (dCount > 0) jb = (dDelay / dCount) * 1000;
      mark = { id, delay: main.jitterBufferDelay, count: main.jitterBufferEmittedCount };
    }
    // A main video that had frames and now shows none: 0 fps (Chrome leaves framesPerSecond out).
    const fps = main ? (main.framesPerSecond ?? ((main.framesDecoded ?? 0) > 0 ? 0 : undefined)) : undefined;
    stats.down = compact({
      freeze_count: anyFreeze ? clampNum(freezes, 0, LIMITS.u32) : undefined,
      fps: clampNum(fps, 0, LIMITS.fps, 1),
      height: main ? clampNum(main.frameHeight, 0, LIMITS.height) : undefined,
      jitter_buffer_ms: clampNum(jb, 0, LIMITS.jitterBufferMs, 1),
      packets_lost: anyLost ? clampNum(lost, 0, Number.MAX_SAFE_INTEGER) : undefined,
      audio_level: clampNum(level, 0, 1, 3),
    });
  }
  if (pub) {
    /** @type {QualityLimitation | undefined} */
    let limitation;
    /** @type {any} */
    let top;
    /** @type {number | undefined} */
    let micLevel;
    pub.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        const r = /** @type {string | undefined} */ (s.qualityLimitationReason);
        if (typeof r === 'string' && Object.hasOwn(LIMITATION_RANK, r)) {
          const q = /** @type {QualityLimitation} */ (r);
          if (limitation === undefined || LIMITATION_RANK[q] > LIMITATION_RANK[limitation]) limitation = q;
        }
        if ((s.frameHeight ?? 0) > 0 && (!top || s.frameHeight > top.frameHeight)) top = s;
      } else if (s.type === 'media-source' && s.kind === 'audio' && typeof s.audioLevel === 'number') {
        micLevel = Math.max(micLevel ?? 0, s.audioLevel);
      }
    });
    const pair = selectedPair(pub);
    const avail = typeof pair?.availableOutgoingBitrate === 'number' ? pair.availableOutgoingBitrate / 1000 : undefined;
    stats.up = compact({
      quality_limitation: limitation,
      available_kbps: clampNum(avail, 0, LIMITS.kbps),
      fps: top ? clampNum(top.framesPerSecond, 0, LIMITS.fps, 1) : undefined,
      height: top ? clampNum(top.frameHeight, 0, LIMITS.height) : undefined,
      audio_level: clampNum(micLevel, 0, 1, 3),
    });
  }
  const candidate = candidateOf(pub) ?? candidateOf(sub);
  if (candidate) stats.candidate = candidate;
  if (!stats.up) delete stats.up;
  if (!stats.down) delete stats.down;
  return { stats, mark };
}

/**
 * Sends `client_stats` every `everyMs` (2 s) while the media session has a connection: the
 * server's view of a stream is completed by what only the browser knows (freezes, the
 * encoder's limits, the bandwidth estimate, the candidate type). Never throws; the server
 * takes one report a second at most, so reports are never closer than `minGapMs`. Refusals
 * (`rate_limited`, `invalid_value`) are logged to the console, never shown to people.
 */
export class StatsReporter {
  /**
   * @param {MediaSession} media
   * @param {{everyMs?: number, minGapMs?: number}} [opts]
   */
  constructor(media, opts = {}) {
    this.media = media;
    this.everyMs = opts.everyMs ?? 2000;
    this.minGapMs = opts.minGapMs ?? 1500;
    /** Reports sent, acked, refused (for tests and the curious). */
    this.sent = 0;
    this.acked = 0;
    this.refused = 0;
    /** @type {ClientStats | null} the last report sent */
    this.last = null;
    /** @type {string} the last refusal's code and message */
    this.lastError = '';
    /** @type {Record<string, number>} refusals by code (`disconnected` when the socket closed first) */
    this.codes = {};
    /** @type {ReturnType<typeof setInterval> | null} */
    this._timer = null;
    this._busy = false;
    this._lastSentAt = 0;
    /** @type {JitterMark | null} */
    this._mark = null;
    /** @type {RTCPeerConnection | null} the subscribe connection `_mark` belongs to */
    this._markPc = null;
  }

  /** Starts reporting (idempotent). */
  start() {
    if (this._timer) return;
    this._timer = setInterval(() => void this.tick(), this.everyMs);
  }

  /** Stops reporting. */
  stop() {
    if (this._timer) clearInterval(this._timer);
    this._timer = null;
  }

  /** One report now, if there is something to say. Never throws. */
  async tick() {
    if (this._busy) return;
    this._busy = true;
    try {
      const conn = this.media.conn;
      const sub = this.media.subscriber;
      const pub = this.media.publisher;
      if (conn.state !== 'open' || (!sub && !pub)) return;
      if (Date.now() - this._lastSentAt < this.minGapMs) return;
      const live = (/** @type {RTCPeerConnection | undefined} */ pc) => pc && pc.connectionState !== 'closed';
      const [subReport, pubReport] = await Promise.all([
        live(sub?.pc) ? sub?.pc.getStats().catch(() => null) : null,
        live(pub?.pc) ? pub?.pc.getStats().catch(() => null) : null,
      ]);
      if (this.media.state === 'closed') return;
      const prev = sub && this._markPc === sub.pc ? this._mark : null;
      const { stats, mark } = summarizeStats({ sub: subReport ?? null, pub: pubReport ?? null, slots: sub?.slots, prev });
      this._mark = mark;
      this._markPc = sub?.pc ?? null;
      if (!stats.up && !stats.down && !stats.candidate) return;
      if (conn.state !== 'open' || Date.now() - this._lastSentAt < this.minGapMs) return;
      this._lastSentAt = Date.now();
      this.sent++;
      this.last = stats;
      try {
        await conn.send('client_stats', { ...stats }, { silent: true });
        this.acked++;
      } catch (e) {
        this.refused++;
        const pe = /** @type {ProtocolError} */ (e);
        const code = pe.code ?? 'error';
        this.codes[code] = (this.codes[code] ?? 0) + 1;
        this.lastError = `${code}: ${pe.message ?? e}`;
        if (pe.code !== 'disconnected') console.warn('roundtable: client_stats refused', this.lastError, stats);
      }
    } catch (e) {
      console.warn('roundtable: client_stats failed', e);
    } finally {
      this._busy = false;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for pages

/**
 * The invite token in this page's URL (`?token=`).
 * @returns {string}
 */
export function tokenFromLocation() {
  const t = new URLSearchParams(location.search).get('token') ?? '';
  // A one-time invite, once used, opens with the session token the server handed out.
  try {
    return sessionStorage.getItem(`rt-session:${t}`) ?? t;
  } catch {
    return t;
  }
}

/**
 * Where `you` stand: holding the floor, waiting with a position, pending, or nothing.
 * @param {MeetingStore} store
 * @param {string} [participant]
 * @returns {{state: 'none'} | {state: 'pending', request: RequestInfo}
 *   | {state: 'queued', request: RequestInfo, position: number, list: ListKind}
 *   | {state: 'granted', request: RequestInfo}}
 */
export function standing(store, participant) {
  const r = store.requestOf(participant);
  if (!r) return { state: 'none' };
  if (r.state === 'granted') return { state: 'granted', request: r };
  if (r.state === 'pending') return { state: 'pending', request: r };
  return { state: 'queued', request: r, position: r.position ?? 0, list: r.list };
}

/**
 * The deadline that counts for a speaker's countdown: their grant's, or (a paused slot) the
 * item's remaining time.
 * @param {MeetingStore} store
 * @param {RequestInfo} r
 * @returns {{deadline?: number, pausedRemaining?: number, limit?: number, warning?: number}}
 */
export function countdownOf(store, r) {
  if (r.deadline !== undefined) return { deadline: r.deadline, limit: r.limit_ms, warning: r.warning_ms };
  if (r.slot) {
    const item = store.agenda?.items.find((i) => i.id === r.slot);
    if (item && item.remaining_ms !== undefined) {
      return { pausedRemaining: item.remaining_ms, limit: r.limit_ms, warning: r.warning_ms };
    }
  }
  return {};
}
