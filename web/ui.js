// @ts-check
/**
 * Small UI helpers shared by the pages: DOM building, the connection banner, toasts for
 * refused commands, the ARIA live region, countdown formatting and phases, audio playback.
 * @module ui
 */

import { Connection, tokenFromLocation, countdownOf } from './protocol.js';
import { S, ordinal } from './strings.js';

/**
 * @typedef {string | Node | null | undefined | false} Child
 */

/**
 * Creates an element: `h('button', {class: 'x', onclick: f}, 'Text')`.
 * Attributes starting with `on` become listeners; `dataset`-style keys are plain attributes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'text') {
      el.textContent = v;
    } else if (k === 'style') {
      // Through the CSSOM: the pages' Content-Security-Policy refuses inline style attributes.
      el.style.cssText = String(v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

/**
 * Replaces the children of `el`.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

// ---------------------------------------------------------------------------------------------
// Live region and toasts

/** @type {HTMLElement | null} */
let liveEl = null;

/**
 * Announces a message politely to screen readers (and shows nothing).
 * @param {string} msg
 */
export function announce(msg) {
  if (!liveEl) {
    liveEl = h('div', { class: 'sr-only', 'aria-live': 'polite', 'aria-atomic': 'false', id: 'live' });
    document.body.append(liveEl);
  }
  const line = h('p', {}, msg);
  liveEl.append(line);
  while (liveEl.childElementCount > 5) liveEl.firstElementChild?.remove();
}

/** @type {HTMLElement | null} */
let toastsEl = null;

/**
 * Shows a message that stays until dismissed (errors) or for a few seconds (info).
 * @param {string} msg
 * @param {'error'|'info'} [kind]
 */
export function toast(msg, kind = 'error') {
  if (!toastsEl) {
    toastsEl = h('div', { class: 'toasts', id: 'toasts' });
    document.body.append(toastsEl);
  }
  const close = h('button', { class: 'toast-close', 'aria-label': S.error.dismiss, title: S.error.dismiss }, '×');
  const t = h(
    'div',
    { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-kind' }, kind === 'error' ? '⚠ ' : 'ℹ '),
    h('span', { class: 'toast-text' }, msg),
    close,
  );
  close.addEventListener('click', () => t.remove());
  toastsEl.append(t);
  while (toastsEl.childElementCount > 4) toastsEl.firstElementChild?.remove();
  setTimeout(() => t.remove(), kind === 'error' ? 12000 : 4000);
}

// ---------------------------------------------------------------------------------------------
// Time

/**
 * `m:ss` (or `h:mm:ss`); negative values get a leading `+` (an overrun counts up).
 * Rounds towards the next second while counting down, so 0:00 shows exactly at the deadline.
 * @param {number} ms
 */
export function fmtDuration(ms) {
  const over = ms < 0;
  const total = over ? Math.floor(-ms / 1000) : Math.ceil(ms / 1000);
  const hh = Math.floor(total / 3600);
  const mm = Math.floor((total % 3600) / 60);
  const ss = total % 60;
  const body = hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${String(ss).padStart(2, '0')}` : `${mm}:${String(ss).padStart(2, '0')}`;
  return (over && total > 0 ? '+' : '') + body;
}

/**
 * Local wall-clock time of a server time (the offset matters little at minute precision).
 * @param {number | undefined} serverMs
 */
export function fmtClock(serverMs) {
  if (serverMs === undefined) return '—';
  return new Date(serverMs).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * Local wall-clock time of a server time to the second, `HH:MM:SS` (24 h): alert logs.
 * @param {number | undefined} serverMs
 */
export function fmtTime(serverMs) {
  if (serverMs === undefined || !Number.isFinite(serverMs)) return '—';
  const d = new Date(serverMs);
  const two = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/**
 * The countdown phase: wrap-up from the warning threshold, danger in the last
 * `min(10 s, warning / 2)` (or the last 10 s without a warning), overrun past the deadline.
 * @param {number} remaining ms (negative: overrun)
 * @param {number | undefined} warningMs
 * @returns {'normal'|'wrapup'|'danger'|'overrun'}
 */
export function phaseOf(remaining, warningMs) {
  if (remaining < 0) return 'overrun';
  const warn = warningMs ?? 0;
  const danger = warn > 0 ? Math.min(10000, warn / 2) : 10000;
  if (remaining <= danger) return 'danger';
  if (warn > 0 && remaining <= warn) return 'wrapup';
  return 'normal';
}

/**
 * Calls `fn` now and then several times a second (countdowns), until the returned stop.
 * @param {() => void} fn
 * @param {number} [everyMs]
 */
export function every(fn, everyMs = 200) {
  fn();
  const t = setInterval(fn, everyMs);
  return () => clearInterval(t);
}

// ---------------------------------------------------------------------------------------------
// Boot

/**
 * Opens the connection from the page's token, with a banner showing its state and toasts for
 * every refused command. Throws (after showing why) when the URL has no token.
 * @param {{reconnectForever?: boolean, banner?: HTMLElement}} [opts]
 */
export function boot(opts = {}) {
  const token = tokenFromLocation();
  const banner = opts.banner ?? document.getElementById('conn') ?? h('div', { id: 'conn' });
  if (!banner.isConnected) document.body.prepend(banner);
  banner.classList.add('conn');
  banner.setAttribute('role', 'status');
  if (!token) {
    banner.dataset.state = 'closed';
    banner.textContent = S.conn.noToken;
    throw new Error('no token');
  }
  const conn = new Connection({ token, reconnectForever: opts.reconnectForever });
  /** Every state the banner showed, for tests: `[state, reason, ms since navigation]`. @type {[string, string, number][]} */
  const states = [];
  /** @type {ReturnType<typeof setTimeout> | null} */
  let holdTimer = null;
  /** When the banner started saying "reconnecting at the chair's request". */
  let askedAt = 0;
  conn.on('state', (s, why) => {
    states.push([s, why, Math.round(performance.now())]);
    if (holdTimer) clearTimeout(holdTimer);
    holdTimer = null;
    const show = () => {
      banner.dataset.state = s;
      document.body.dataset.conn = s;
      banner.dataset.reason = why === 'removed' || why === 'reconnect' || why === 'replaced' ? why : '';
      let text = S.conn[s];
      if (s === 'closed' && why === 'removed') text = S.conn.removed;
      else if (s === 'closed' && why === 'replaced') text = S.conn.replaced;
      else if (s === 'closed' && why === 'left') text = S.conn.left;
      else if (s === 'closed' && why === 'refused') text = refusalText(conn.refusal).title;
      else if (s === 'reconnecting' && why === 'reconnect') text = S.conn.reconnectAsked;
      else if ((s === 'closed' || s === 'reconnecting') && why) text = `${text} (${why})`;
      banner.textContent = text;
      if (s !== 'open') announce(text);
      return text;
    };
    if (s === 'reconnecting' && why === 'reconnect') askedAt = Date.now();
    if (s === 'open' && askedAt) {
      // Asked to reconnect: back within a blink. Leave "reconnecting" up a moment, so people
      // see what happened, then say so.
      const wait = Math.max(0, askedAt + 800 - Date.now());
      askedAt = 0;
      holdTimer = setTimeout(() => {
        holdTimer = null;
        show();
        banner.textContent = S.conn.reconnected;
      }, wait);
      return;
    }
    show();
    if (s === 'closed' && why === 'removed') showRemoved();
    if (s === 'closed' && why === 'refused') showRefused(conn.refusal);
  });
  conn.on('command_error', (e) => {
    if (e.code === 'disconnected') {
      // Said by the banner already when the server closed on purpose (removed, reconnect).
      if (conn.goodbye || conn.state === 'closed') return;
      toast(S.conn.reconnecting);
      return;
    }
    toast(S.error.refused(e.code, e.message));
  });
  // Expose for tests and for the curious (the test hook: window.__rt).
  /** @type {any} */ (window).__rt = Object.assign(/** @type {any} */ (window).__rt ?? {}, { conn, store: conn.store, states });
  conn.connect();
  return conn;
}

/**
 * The whole page says that the chair removed this participant (the connection is closed for
 * good; a reload would try again). Every page gets it through {@link boot}.
 */
export function showRemoved() {
  showStopped('removed', S.conn.removed, S.conn.removedHelp);
  document.body.dataset.removed = 'true';
}

/**
 * What a refusal of this page's link means to the person holding it.
 * @param {import('./protocol.js').TokenRefusal | null} r
 * @returns {{title: string, help: string}}
 */
export function refusalText(r) {
  const known = /** @type {Record<string, {title: string, help: string}>} */ (S.conn.refused);
  return r && Object.hasOwn(known, r.code) ? known[r.code] : S.conn.refused.other;
}

/**
 * The whole page says that the server refuses its link (used, withdrawn, expired) and what to
 * do; the server's code and message stay visible for the organisers' help desk.
 * @param {import('./protocol.js').TokenRefusal | null} r
 */
export function showRefused(r) {
  const t = refusalText(r);
  const box = showStopped('refused', t.title, t.help);
  if (r) box.append(h('p', { class: 'muted', id: 'refused-detail' }, `${r.code}: ${r.message}`));
  document.body.dataset.refused = r?.code ?? 'refused';
}

/**
 * Replaces the page with a message: the connection is closed for good (a reload would try
 * again); media elements stop.
 * @param {string} id @param {string} title @param {string} help
 * @returns {HTMLElement} the message box
 */
function showStopped(id, title, help) {
  const app = document.getElementById('app') ?? document.body;
  const box = h(
    'section',
    { class: 'check panel removed', id, role: 'alert', 'aria-live': 'assertive' },
    h('h1', { id: `${id}-title` }, title),
    h('p', {}, help),
  );
  fill(app, box);
  for (const el of document.querySelectorAll('video, audio')) {
    const m = /** @type {HTMLMediaElement} */ (el);
    m.pause();
    m.srcObject = null;
  }
  document.title = `roundtable · ${title}`;
  return box;
}

/**
 * Announces queue changes between two floor views (who joined the list, who got the floor).
 * @param {import('./protocol.js').MeetingStore} store
 */
export function announceQueue(store) {
  /** @type {Map<number, string>} */
  let prevState = new Map();
  let first = true;
  store.on('change', () => {
    const f = store.floor;
    if (!f) return;
    /** @type {Map<number, string>} */
    const now = new Map();
    /** @type {Map<number, import('./protocol.js').RequestInfo>} */
    const byId = new Map();
    for (const r of [...f.holders, ...f.queue, ...f.replies, ...f.pending]) {
      now.set(r.id, `${r.state}:${r.position ?? ''}`);
      byId.set(r.id, r);
    }
    if (!first) {
      for (const [id, st] of now) {
        const r = /** @type {import('./protocol.js').RequestInfo} */ (byId.get(id));
        if (prevState.get(id) === st) continue;
        const who = r.beneficiary.name;
        if (r.state === 'granted') announce(S.floor.grantedAnnounce(who));
        else if (r.state === 'accepted' && !prevState.has(id)) announce(S.floor.queuedAnnounce(who, r.position ?? 0));
      }
      for (const [id] of prevState) {
        if (!now.has(id)) announce(`${S.floor.endedAnnounce(store.allRequests().find((x) => x.id === id)?.beneficiary.name ?? `#${id}`)}`);
      }
    }
    prevState = now;
    first = false;
  });
}

// ---------------------------------------------------------------------------------------------
// Audio

/** @type {HTMLButtonElement | null} */
let soundButton = null;

/**
 * Plays a received audio track in a hidden `<audio>`; if the browser blocks autoplay, shows a
 * button that turns the sound on with a click.
 * @param {MediaStreamTrack} track
 * @param {HTMLElement} host where the element lives
 * @returns {HTMLAudioElement}
 */
export function playAudio(track, host) {
  const el = h('audio', { autoplay: true });
  el.srcObject = new MediaStream([track]);
  host.append(el);
  el.play().catch(() => {
    if (soundButton) return;
    soundButton = h('button', { class: 'sound-button big', type: 'button' }, '♪ ' + S.media.enableSound);
    soundButton.addEventListener('click', () => {
      for (const a of document.querySelectorAll('audio')) void a.play().catch(() => {});
      soundButton?.remove();
      soundButton = null;
    });
    document.body.append(soundButton);
    toast(S.media.soundBlocked, 'info');
  });
  track.addEventListener('ended', () => el.remove());
  return el;
}

/**
 * A line describing a request: name, delegation, where, and (given their presence) whether
 * their connection is lost: the chair sees that the floor or the place in line is being held
 * for them during the grace period.
 * @param {import('./protocol.js').RequestInfo} r
 * @param {import('./protocol.js').Presence} [presence]
 */
export function who(r, presence) {
  const b = r.beneficiary;
  const away = !b.in_room && (presence === 'connection_lost' || presence === 'left');
  return h(
    'span',
    { class: 'who' },
    h('span', { class: 'who-name' }, b.name),
    b.delegation ? h('span', { class: 'who-del' }, ` · ${b.delegation}`) : null,
    b.in_room ? h('span', { class: 'tag tag-room' }, S.floor.inRoom) : null,
    r.chair ? h('span', { class: 'tag tag-chair' }, S.floor.chair) : null,
    away ? h('span', { class: 'tag tag-away', 'data-away': 'true' }, S.floor.connectionLost) : null,
  );
}

/** @type {WeakMap<object, Set<string>>} items whose wrap-up warning was announced */
const warnedItems = new WeakMap();

/**
 * @typedef {object} MainClock
 * @property {import('./protocol.js').RequestInfo | null} request the speaker it is for (none: the item)
 * @property {import('./protocol.js').ItemInfo | null} item the current item
 * @property {number | undefined} remaining ms (negative: overrun); undefined: no limit
 * @property {'normal'|'wrapup'|'danger'|'overrun'|'paused'|'none'|'idle'} phase
 */

/**
 * The countdown that matters on a shared screen: the first speaker's (other than the chair),
 * else the current item's. An item's wrap-up starts `warning_ms` before its deadline (so a
 * page opened during it shows it at once), or at the server's `item_warning`.
 * @param {import('./protocol.js').MeetingStore} store
 * @param {import('./protocol.js').Clock} clock
 * @returns {MainClock}
 */
export function mainClock(store, clock) {
  let warned = warnedItems.get(store);
  if (!warned) {
    const set = new Set();
    warned = set;
    warnedItems.set(store, set);
    store.on('event', (m) => {
      if (m.event.type === 'item_warning' && m.event.item) set.add(m.event.item);
      if ((m.event.type === 'item_extended' || m.event.type === 'item_started') && m.event.item) set.delete(m.event.item);
    });
  }
  const item = store.currentItem();
  const r = store.floor?.holders.find((x) => !x.chair) ?? null;
  if (r) {
    const c = countdownOf(store, r);
    if (c.deadline !== undefined) {
      const remaining = clock.remaining(c.deadline);
      return { request: r, item, remaining, phase: phaseOf(remaining, c.warning) };
    }
    if (c.pausedRemaining !== undefined) return { request: r, item, remaining: c.pausedRemaining, phase: 'paused' };
    return { request: r, item, remaining: undefined, phase: 'none' };
  }
  if (item) {
    if (item.deadline !== undefined) {
      const remaining = clock.remaining(item.deadline);
      let phase = phaseOf(remaining, undefined);
      if (phase === 'danger' && remaining > 10000) phase = 'normal';
      const inWrapup = item.warning_ms !== undefined && remaining <= item.warning_ms;
      if (phase === 'normal' && (warned.has(item.id) || inWrapup)) phase = 'wrapup';
      return { request: null, item, remaining, phase };
    }
    if (item.remaining_ms !== undefined) return { request: null, item, remaining: item.remaining_ms, phase: 'paused' };
  }
  return { request: null, item, remaining: undefined, phase: 'idle' };
}

export { ordinal };

/**
 * Re-renders a panel without losing the keyboard focus: the focused element is found again
 * after `render` by its id, or by its request and action (`data-request`, `data-act`), or by
 * its text within the same request row.
 * @param {HTMLElement} panel
 * @param {() => void} render
 */
export function keepFocus(panel, render) {
  const a = document.activeElement;
  if (!(a instanceof HTMLElement) || !panel.contains(a)) {
    render();
    return;
  }
  const id = a.id;
  const row = a.closest('[data-request]');
  const req = row instanceof HTMLElement ? row.dataset.request : undefined;
  const act = a.dataset.act;
  const text = a.textContent;
  const isRow = row === a;
  render();
  /** @type {Element | null} */
  let el = null;
  if (id) el = document.getElementById(id);
  else if (req !== undefined) {
    const rows = panel.querySelectorAll(`[data-request="${req}"]`);
    for (const r of rows) {
      if (isRow) el = r;
      else if (act) el = r.querySelector(`[data-act="${act}"]`);
      else el = [...r.querySelectorAll('button')].find((b) => b.textContent === text) ?? null;
      if (el) break;
    }
  }
  if (el instanceof HTMLElement) el.focus();
}
