// @ts-check
/**
 * The room technician's dashboard (role technician), built from the server's `health` (every
 * 2 s) and `alert` messages:
 *
 * - the room's program large, with what the room sends beside it (score, grade and cause,
 *   loss, jitter, round trip, bitrate, picture, network, microphone level, 5-minute history,
 *   and what the room's browser itself reports: encoder limits, bandwidth estimate);
 * - a table with a row per participant with media (room first, then by name): sending and
 *   receiving scores (number, grade as text and colour, cause), loss, jitter, RTT, bit rate,
 *   resolution and frame rate, candidate type (relay flagged), microphone level, 5-minute
 *   sparklines; and per row the technician's actions: a keyframe (`request_keyframe`), what
 *   they receive (`force_layer`: low video, audio only, automatic) and a reconnect
 *   (`ask_reconnect`, after an inline confirmation);
 * - the alert log, newest first, open alerts highlighted, each acknowledged with a button
 *   (`ack_alert`); new alerts are announced in a live region;
 * - the server's CPU, the time of the last report (and how stale it is) and the number of
 *   open alerts in the header.
 *
 * Subscribes, never publishes. The program sound starts off: a technician's laptop in the
 * room would feed it back into the room's microphones ("Listen" turns it on).
 *
 * Rows are built once and updated in place (`data-updated` = the report's `at`), so the
 * keyboard focus stays where it is while the numbers change.
 */

import { MediaSession, sampleStats } from './protocol.js';
import { S } from './strings.js';
import { h, fill, $, boot, announce, fmtTime, keepFocus } from './ui.js';

/** @typedef {import('./protocol.js').ReceivedTrack} ReceivedTrack */
/** @typedef {import('./protocol.js').ParticipantHealth} ParticipantHealth */
/** @typedef {import('./protocol.js').StreamHealth} StreamHealth */
/** @typedef {import('./protocol.js').HealthMessage} HealthMessage */
/** @typedef {import('./protocol.js').AlertInfo} AlertInfo */
/** @typedef {import('./protocol.js').ForceLayer} ForceLayer */
/** @typedef {import('./protocol.js').Grade} Grade */

/** Above these a value is flagged (with a sign, not colour alone). */
const WARN = Object.freeze({ lossPct: 5, jitterMs: 30, rttMs: 300 });
/** The microphone meter's range: −60 dBov (empty) to 0 (full); 127 is silence. */
const METER_FLOOR_DB = 60;
/** A report older than this is called stale in the header. */
const STALE_MS = 6000;
/** Points in a 5-minute sparkline (one report every 2 s). */
const SPARK_POINTS = 150;
/** @type {ForceLayer[]} */
const LAYERS = ['low', 'audio_only', 'auto'];

const app = $('app');
const conn = (() => {
  try {
    return boot();
  } catch {
    return null;
  }
})();
if (conn) start(conn);

/**
 * @typedef {object} Row
 * @property {string} id participant id
 * @property {HTMLTableRowElement} tr
 * @property {Record<string, HTMLTableCellElement>} cells
 * @property {HTMLTableCellElement} actionsCell
 * @property {HTMLElement} normal the actions (built once, updated in place)
 * @property {HTMLButtonElement} keyframe
 * @property {HTMLButtonElement} reconnect
 * @property {HTMLElement} layerGroup
 * @property {Map<ForceLayer, HTMLButtonElement>} layers
 * @property {HTMLElement} status the outcome of the last action
 * @property {ReturnType<typeof setTimeout> | null} statusTimer
 * @property {boolean} confirming the reconnect confirmation is open
 * @property {string} shown what the actions cell shows now (`normal`, `confirm`, `self`)
 * @property {ParticipantHealth | null} ph the last report
 */

/** @param {import('./protocol.js').Connection} conn */
function start(conn) {
  const store = conn.store;
  const media = new MediaSession(conn, { subscribe: true });
  /** Every action sent and how the server answered (test hook). @type {{type: string, participant?: string, alert?: number, layer?: string, ok: boolean, code?: string, at: number}[]} */
  const actions = [];

  // ------------------------------------------------------------------ layout
  const titleBox = h('div', {});
  const cpuEl = h('span', { class: 'tech-badge', id: 'cpu', 'data-level': 'unknown' }, '');
  const updatedEl = h('span', { class: 'tech-badge', id: 'health-at', 'data-level': 'unknown' }, S.tech.waiting);
  const alertCountEl = h('a', { class: 'tech-badge', id: 'alert-count', href: '#alerts', 'data-level': 'ok' }, S.tech.openAlerts(0));
  const header = h('header', { class: 'top' }, titleBox, h('div', { class: 'tech-status', id: 'tech-status' }, cpuEl, updatedEl, alertCountEl));

  const programBox = h('div', { class: 'video-box tech-program', id: 'program-box' }, h('div', { class: 'placeholder' }, S.media.connecting));
  const listenBtn = h('button', { type: 'button', id: 'listen', class: 'small', 'aria-pressed': 'false', 'aria-describedby': 'listen-note' }, S.tech.listen);
  const listenNote = h('span', { class: 'muted tech-note', id: 'listen-note' }, S.tech.listenHelp);
  const videoPanel = h('section', { class: 'tech-video stack', 'aria-label': S.tech.program }, programBox, h('div', { class: 'row' }, listenBtn, listenNote));
  const roomCard = h('section', { class: 'panel tech-room', id: 'room-health', 'aria-labelledby': 'room-health-title' }, h('h2', { id: 'room-health-title' }, S.tech.roomTitle), h('p', { class: 'muted' }, S.tech.waiting));

  const tbody = h('tbody', { id: 'health-rows' });
  const cols = /** @type {const} */ (['who', 'up', 'down', 'loss', 'jitter', 'rtt', 'kbps', 'video', 'network', 'level', 'actions']);
  const table = h(
    'table',
    { class: 'health-table', id: 'health-table' },
    h('caption', {}, S.tech.tableCaption),
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', 'data-col': c }, S.tech.col[c])))),
    tbody,
  );
  const emptyEl = h('p', { class: 'empty', id: 'health-empty' }, S.tech.waiting);
  const noMediaEl = h('p', { class: 'muted', id: 'no-media' });
  const tablePanel = h('section', { class: 'panel tech-table', id: 'health', 'aria-labelledby': 'health-title' }, h('h2', { id: 'health-title' }, S.tech.tableTitle), h('div', { class: 'table-scroll' }, table), emptyEl, noMediaEl);

  const alertList = h('ol', { class: 'alert-log', id: 'alert-log' }, h('li', { class: 'empty' }, S.tech.noAlerts));
  const alertLive = h('div', { class: 'sr-only', id: 'alert-live', 'aria-live': 'polite', 'aria-atomic': 'false' });
  const alertsPanel = h('section', { class: 'panel tech-alerts', id: 'alerts', 'aria-labelledby': 'alerts-title', tabindex: '-1' }, h('h2', { id: 'alerts-title' }, S.tech.alerts), alertList, alertLive);

  fill(app, header, h('main', { class: 'tech-grid' }, videoPanel, roomCard, tablePanel, alertsPanel));

  // ------------------------------------------------------------------ program video and sound
  /** @type {Map<string, ReceivedTrack>} */
  const received = new Map();
  /** @type {Map<string, HTMLVideoElement>} */
  const videos = new Map();
  const audioHost = h('div', { class: 'hidden', id: 'audio-host' });
  document.body.append(audioHost);
  let listening = false;

  media.on('track', (t) => {
    received.set(t.mid, t);
    if (t.track.kind === 'audio') {
      // Muted until "Listen" (muted playback needs no click, so nothing asks for one).
      const el = h('audio', { autoplay: true });
      el.muted = !listening;
      el.srcObject = new MediaStream([t.track]);
      audioHost.append(el);
      void el.play().catch(() => {});
      t.track.addEventListener('ended', () => el.remove());
    }
    renderVideo();
  });
  media.on('slots', () => renderVideo());
  // A media failure restarts the media only: the health reports come over the websocket.
  media.on('failed', () => setTimeout(() => void media.restart(), 3000));
  conn.on('joined', () => {
    received.clear();
    videos.clear();
    audioHost.replaceChildren();
  });

  listenBtn.addEventListener('click', () => {
    listening = !listening;
    listenBtn.setAttribute('aria-pressed', String(listening));
    for (const a of audioHost.querySelectorAll('audio')) {
      a.muted = !listening;
      if (listening) void a.play().catch(() => {});
    }
    listenNote.textContent = listening ? '' : S.tech.listenHelp;
  });

  /** @param {ReceivedTrack} t */
  function videoFor(t) {
    let v = videos.get(t.mid);
    if (!v) {
      v = h('video', { autoplay: true, muted: true, playsinline: true, 'data-mid': t.mid });
      v.muted = true;
      v.srcObject = new MediaStream([t.track]);
      videos.set(t.mid, v);
    }
    return v;
  }

  function renderVideo() {
    /** @type {ReceivedTrack | undefined} */
    let program;
    for (const t of received.values()) {
      if (t.track.kind === 'video' && t.slot.slot === 'track' && t.slot.source === 'program') program = t;
    }
    if (program) {
      const v = videoFor(program);
      if (v.parentElement !== programBox) fill(programBox, v, h('span', { class: 'video-label' }, S.tech.program));
    } else if (!programBox.querySelector('.placeholder')) {
      fill(programBox, h('div', { class: 'placeholder' }, S.tech.noProgram));
    }
  }

  // ------------------------------------------------------------------ formatting helpers
  /** @param {string} id */
  const nameOf = (id) => store.participants.get(id)?.name ?? id;
  /** @param {number | undefined} x @param {number} [digits] */
  const num = (x, digits = 0) => (x === undefined || !Number.isFinite(x) ? undefined : digits ? x.toFixed(digits) : Math.round(x).toLocaleString('en'));

  /**
   * The picture: `720p30` in the table (the broadcast notation), `720p · 30 fps` when `long`.
   * @param {StreamHealth | undefined} sh
   * @param {import('./protocol.js').ClientUp | import('./protocol.js').ClientDown | undefined} client
   * @param {boolean} [long]
   */
  function picture(sh, client, long = false) {
    const height = sh?.height ?? client?.height;
    const fps = sh?.fps ?? client?.fps;
    if (!height && fps === undefined) return undefined;
    if (!height) return S.tech.fps(Math.round(fps ?? 0));
    if (fps === undefined) return `${height}p`;
    return long ? `${height}p · ${S.tech.fps(Math.round(fps))}` : `${height}p${Math.round(fps)}`;
  }

  /**
   * One line of a two-direction cell: ↑ (sending) or ↓ (receiving), the value, and a ⚠ when
   * it is over its threshold.
   * @param {'up'|'down'} dir
   * @param {string | undefined} value
   * @param {boolean} [warn]
   */
  function dirLine(dir, value, warn = false) {
    return h(
      'div',
      { class: 'm-line', 'data-dir': dir, 'data-warn': warn ? 'true' : undefined },
      h('span', { class: 'dir', 'aria-hidden': 'true' }, dir === 'up' ? S.tech.upShort : S.tech.downShort),
      h('span', { class: 'sr-only' }, `${dir === 'up' ? S.tech.upSr : S.tech.downSr}: `),
      warn ? h('span', { class: 'warn-mark', 'aria-hidden': 'true' }, '⚠') : null,
      value === undefined ? h('span', { class: 'val muted' }, S.tech.none) : h('span', { class: 'val' }, value),
    );
  }

  /**
   * Score (number and grade in words), cause, the 5-minute history (`spark`: its label), and
   * what the client reports itself.
   * @param {StreamHealth | undefined} sh
   * @param {string[]} notes
   * @param {string} absent
   * @param {{big?: boolean, spark?: string}} [opts]
   */
  function scoreView(sh, notes, absent, opts = {}) {
    if (!sh) return [h('span', { class: 'muted' }, S.tech.none), h('span', { class: 'sr-only' }, absent)];
    return [
      h('span', { class: opts.big ? 'score score-big' : 'score', 'data-grade': sh.grade }, h('b', { class: 'score-n' }, String(sh.score)), ' ', h('span', { class: 'grade' }, S.health.grade[sh.grade] ?? sh.grade)),
      sh.cause ? h('div', { class: 'cause' }, S.health.cause[sh.cause] ?? sh.cause) : null,
      opts.spark ? sparkline(sh.history, opts.spark, sh.grade) : null,
      notes.length ? h('div', { class: 'client-note' }, notes.join(' · ')) : null,
    ];
  }

  /** What the sender's browser reports, in words. @param {ParticipantHealth} ph */
  function upNotes(ph) {
    const c = ph.client?.up;
    /** @type {string[]} */
    const out = [];
    if (ph.up?.mos !== undefined) out.push(S.tech.mos(Math.round(ph.up.mos * 10) / 10));
    if (c?.quality_limitation && c.quality_limitation !== 'none') out.push(S.health.limitation[c.quality_limitation] ?? c.quality_limitation);
    if (c?.available_kbps !== undefined) out.push(S.tech.estimate(Math.round(c.available_kbps)));
    return out;
  }
  /** What the receiver's browser reports, in words. @param {ParticipantHealth} ph */
  function downNotes(ph) {
    const c = ph.client?.down;
    /** @type {string[]} */
    const out = [];
    if (ph.down?.mos !== undefined) out.push(S.tech.mos(Math.round(ph.down.mos * 10) / 10));
    if (c?.freeze_count) out.push(S.tech.freezes(c.freeze_count));
    if (c?.jitter_buffer_ms !== undefined) out.push(S.tech.buffer(Math.round(c.jitter_buffer_ms)));
    return out;
  }

  /** The microphone level (0 loudest … 127 silence, −dBov) as a meter with its value in words. @param {number | undefined} level */
  function levelMeter(level) {
    if (level === undefined) return h('span', { class: 'muted' }, S.tech.none);
    const db = Math.min(127, Math.max(0, Math.round(level)));
    const pct = Math.max(0, Math.min(100, ((METER_FLOOR_DB - db) / METER_FLOOR_DB) * 100));
    const text = db >= 127 ? S.tech.silent : S.tech.dB(db);
    return h(
      'div',
      { class: 'lvl' },
      h('div', { class: 'lvl-bar', role: 'meter', 'aria-label': S.tech.level, 'aria-valuemin': '-127', 'aria-valuemax': '0', 'aria-valuenow': String(-db), 'aria-valuetext': text }, h('div', { style: `width:${pct.toFixed(0)}%` })),
      h('span', { class: 'lvl-text' }, text),
    );
  }

  /** The network cell: the candidate type, a relay flagged. @param {ParticipantHealth} ph */
  function network(ph) {
    if (!ph.candidate) return h('span', { class: 'muted' }, S.tech.none);
    const text = S.health.candidate[ph.candidate] ?? ph.candidate;
    return ph.candidate === 'relay' ? h('span', { class: 'tag tag-relay', 'data-candidate': 'relay' }, `⚠ ${text}`) : h('span', { 'data-candidate': ph.candidate }, text);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  /**
   * A 5-minute score history as an inline SVG: one point per report, newest at the right,
   * faint lines at the grade thresholds (80, 40).
   * @param {number[] | undefined} history
   * @param {string} dir for the label
   * @param {Grade | undefined} grade colours the line
   * @param {boolean} [big]
   */
  function sparkline(history, dir, grade, big = false) {
    const pts = (history ?? []).slice(-SPARK_POINTS);
    const W = SPARK_POINTS;
    const H = big ? 40 : 22;
    const y = (/** @type {number} */ v) => (H - 1 - (Math.max(0, Math.min(100, v)) / 100) * (H - 2)).toFixed(1);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', big ? 'spark spark-big' : 'spark');
    svg.setAttribute('role', 'img');
    const now = pts.length ? pts[pts.length - 1] : undefined;
    const min = pts.length ? Math.min(...pts) : undefined;
    svg.setAttribute('aria-label', S.tech.sparkLabel(dir, now, min));
    if (grade) svg.setAttribute('data-grade', grade);
    for (const t of [80, 40]) {
      const l = document.createElementNS(SVG, 'line');
      l.setAttribute('x1', '0');
      l.setAttribute('x2', String(W));
      l.setAttribute('y1', y(t));
      l.setAttribute('y2', y(t));
      l.setAttribute('class', 'spark-th');
      svg.append(l);
    }
    if (pts.length) {
      const x0 = W - pts.length;
      const line = pts.map((v, i) => `${(x0 + i + 0.5).toFixed(1)},${y(v)}`);
      if (pts.length === 1) line.push(`${W},${y(pts[0])}`);
      const area = document.createElementNS(SVG, 'polygon');
      area.setAttribute('points', `${(x0 + 0.5).toFixed(1)},${H} ${line.join(' ')} ${W},${H}`);
      area.setAttribute('class', 'spark-area');
      const pl = document.createElementNS(SVG, 'polyline');
      pl.setAttribute('points', line.join(' '));
      pl.setAttribute('class', 'spark-line');
      svg.append(area, pl);
    }
    return svg;
  }

  /** @param {ParticipantHealth} ph @returns {Grade | 'none'} */
  function worstGrade(ph) {
    const order = { excellent: 0, good: 1, poor: 2 };
    const g = [ph.up?.grade, ph.down?.grade].filter((x) => x !== undefined);
    if (!g.length) return 'none';
    return g.reduce((a, b) => (order[b] > order[a] ? b : a));
  }

  /** Participants with an open alert. */
  function alerting() {
    /** @type {Set<string>} */
    const out = new Set();
    for (const a of store.alerts.values()) if (a.cleared_at === undefined && a.participant) out.add(a.participant);
    return out;
  }

  // ------------------------------------------------------------------ actions
  /**
   * Sends a technician's command; errors are shown as toasts by ui.js (boot).
   * @param {string} type
   * @param {Record<string, unknown>} fields
   * @returns {Promise<boolean>}
   */
  async function act(type, fields) {
    try {
      await conn.send(type, fields);
      actions.push({ type, ...fields, ok: true, at: Date.now() });
      return true;
    } catch (e) {
      actions.push({ type, ...fields, ok: false, code: /** @type {any} */ (e)?.code, at: Date.now() });
      return false;
    }
  }

  /** @param {Row} row @param {string} text */
  function rowStatus(row, text) {
    row.status.textContent = `✓ ${text}`;
    announce(text);
    if (row.statusTimer) clearTimeout(row.statusTimer);
    row.statusTimer = setTimeout(() => {
      row.status.textContent = '';
      row.statusTimer = null;
    }, 6000);
  }

  /** @param {Row} row */
  async function keyframe(row) {
    if (await act('request_keyframe', { participant: row.id })) rowStatus(row, S.tech.keyframeAsked(nameOf(row.id)));
  }

  /** @param {Row} row @param {ForceLayer} layer */
  async function force(row, layer) {
    if (await act('force_layer', { participant: row.id, layer })) {
      // Shown at once; the next report confirms it (`force`).
      if (row.ph) row.ph = { ...row.ph, force: layer === 'auto' ? undefined : layer };
      updateActions(row);
      rowStatus(row, S.tech.forceSet(nameOf(row.id), S.health.forceLong[layer]));
    }
  }

  /** @param {Row} row */
  function askReconnect(row) {
    row.confirming = true;
    renderActions(row);
    document.getElementById(`reconnect-yes-${row.id}`)?.focus();
  }
  /** @param {Row} row */
  function keepConnection(row) {
    row.confirming = false;
    renderActions(row);
    row.reconnect.focus();
  }
  /** @param {Row} row */
  async function reconnect(row) {
    const ok = await act('ask_reconnect', { participant: row.id });
    row.confirming = false;
    renderActions(row);
    row.reconnect.focus();
    if (ok) rowStatus(row, S.tech.askedReconnect(nameOf(row.id)));
  }

  // ------------------------------------------------------------------ the table
  /** @type {Map<string, Row>} */
  const rows = new Map();

  /** @param {string} id @returns {Row} */
  function createRow(id) {
    /** @type {Record<string, HTMLTableCellElement>} */
    const cells = {};
    for (const c of cols) {
      if (c === 'actions') continue;
      cells[c] = c === 'who' ? h('th', { scope: 'row', 'data-col': c }) : h('td', { 'data-col': c });
    }
    const actionsCell = h('td', { 'data-col': 'actions' });
    const tr = h('tr', { 'data-participant': id }, Object.values(cells), actionsCell);
    /** @type {Row} */
    const row = /** @type {any} */ ({ id, tr, cells, actionsCell, confirming: false, shown: '', ph: null, statusTimer: null });
    row.keyframe = h('button', { type: 'button', class: 'small', id: `keyframe-${id}`, 'data-act': 'keyframe', onclick: () => void keyframe(row) }, S.tech.keyframe);
    row.reconnect = h('button', { type: 'button', class: 'small', id: `reconnect-${id}`, 'data-act': 'reconnect', onclick: () => askReconnect(row) }, S.tech.reconnect);
    row.layers = new Map(LAYERS.map((l) => [l, h('button', { type: 'button', class: 'small seg', 'data-act': `force-${l}`, 'data-layer': l, 'aria-pressed': 'false', onclick: () => void force(row, l) }, S.health.force[l])]));
    row.layerGroup = h('div', { class: 'seg-group', role: 'group' }, [...row.layers.values()]);
    row.status = h('span', { class: 'row-status', 'data-status': '' });
    row.normal = h('div', { class: 'tech-actions' }, h('div', { class: 'btns' }, row.keyframe, row.reconnect), row.layerGroup, row.status);
    rows.set(id, row);
    return row;
  }

  /** The actions cell: the buttons, the reconnect confirmation, or nothing for this page. @param {Row} row */
  function renderActions(row) {
    const self = row.id === store.you?.id;
    const want = self ? 'self' : row.confirming ? 'confirm' : 'normal';
    if (want === 'confirm' && row.shown !== 'confirm') {
      const name = nameOf(row.id);
      const box = h(
        'div',
        { class: 'confirm-box', role: 'group', id: `reconnect-confirm-${row.id}`, 'aria-labelledby': `reconnect-q-${row.id}` },
        h('span', { id: `reconnect-q-${row.id}` }, S.tech.reconnectConfirm(name)),
        h('button', { type: 'button', class: 'small bad', id: `reconnect-yes-${row.id}`, 'data-act': 'reconnect-yes', onclick: () => void reconnect(row) }, S.tech.reconnectYes),
        h('button', { type: 'button', class: 'small', id: `reconnect-no-${row.id}`, 'data-act': 'reconnect-no', onclick: () => keepConnection(row) }, S.tech.reconnectNo),
      );
      box.addEventListener('keydown', (ev) => {
        if (ev.key === 'Escape') {
          ev.preventDefault();
          keepConnection(row);
        }
      });
      fill(row.actionsCell, box);
      row.tr.classList.add('confirming');
    } else if (want !== 'confirm' && want !== row.shown) {
      fill(row.actionsCell, want === 'self' ? h('span', { class: 'muted' }, S.tech.thisPage) : row.normal);
      row.tr.classList.remove('confirming');
    }
    row.shown = want;
    updateActions(row);
  }

  /** Labels, what is possible and the current override, in place (the focus stays). @param {Row} row */
  function updateActions(row) {
    const ph = row.ph;
    const name = nameOf(row.id);
    row.keyframe.setAttribute('aria-label', S.tech.keyframeLabel(name));
    row.reconnect.setAttribute('aria-label', S.tech.reconnectLabel(name));
    row.layerGroup.setAttribute('aria-label', S.tech.layerLabel(name));
    row.keyframe.disabled = !ph?.up;
    const current = ph?.force ?? 'auto';
    for (const [l, b] of row.layers) {
      const on = l === current;
      b.setAttribute('aria-pressed', String(on));
      b.disabled = !ph?.down;
      const text = `${on ? '✓ ' : ''}${S.health.force[l]}`;
      if (b.textContent !== text) b.textContent = text;
    }
    row.layerGroup.title = S.tech.receives(S.health.forceLong[current]);
  }

  /** @param {Row} row @param {ParticipantHealth} ph @param {number} at @param {Set<string>} alerts */
  function updateRow(row, ph, at, alerts) {
    row.ph = ph;
    const p = store.participants.get(ph.participant);
    const self = ph.participant === store.you?.id;
    const c = row.cells;
    row.tr.dataset.updated = String(at);
    row.tr.dataset.grade = worstGrade(ph);
    row.tr.dataset.alert = String(alerts.has(ph.participant));
    if (p) row.tr.dataset.role = p.role;
    fill(
      c.who,
      h('span', { class: 'pname' }, p?.name ?? ph.participant),
      h('span', { class: 'psub' }, p?.delegation ? h('span', { class: 'who-del' }, p.delegation) : null, p ? h('span', { class: p.role === 'room' ? 'tag tag-room' : 'tag' }, S.role[p.role]) : null, self ? h('span', { class: 'tag' }, S.tech.thisPage) : null),
    );
    c.up.dataset.score = ph.up ? String(ph.up.score) : '';
    fill(c.up, scoreView(ph.up, upNotes(ph), S.tech.notSending, { spark: S.tech.col.up }));
    c.down.dataset.score = ph.down ? String(ph.down.score) : '';
    fill(c.down, scoreView(ph.down, downNotes(ph), S.tech.notReceiving, { spark: S.tech.col.down }));
    fill(c.loss, dirLine('up', num(ph.up?.loss_pct, 1), (ph.up?.loss_pct ?? 0) >= WARN.lossPct), dirLine('down', num(ph.down?.loss_pct, 1), (ph.down?.loss_pct ?? 0) >= WARN.lossPct));
    fill(c.jitter, dirLine('up', num(ph.up?.jitter_ms), (ph.up?.jitter_ms ?? 0) >= WARN.jitterMs), dirLine('down', num(ph.down?.jitter_ms), (ph.down?.jitter_ms ?? 0) >= WARN.jitterMs));
    fill(c.rtt, dirLine('up', num(ph.up?.rtt_ms), (ph.up?.rtt_ms ?? 0) >= WARN.rttMs), dirLine('down', num(ph.down?.rtt_ms), (ph.down?.rtt_ms ?? 0) >= WARN.rttMs));
    fill(c.kbps, dirLine('up', num(ph.up?.kbps)), dirLine('down', num(ph.down?.kbps)));
    fill(c.video, dirLine('up', picture(ph.up, ph.client?.up)), dirLine('down', picture(ph.down, ph.client?.down)));
    fill(c.network, network(ph));
    fill(c.level, levelMeter(ph.level));
    renderActions(row);
  }

  /** Room first, then by name; this page last. @param {ParticipantHealth[]} list */
  function ordered(list) {
    const rank = (/** @type {ParticipantHealth} */ ph) => {
      const p = store.participants.get(ph.participant);
      if (p?.role === 'room') return 0;
      if (ph.participant === store.you?.id) return 2;
      return 1;
    };
    return [...list].sort((a, b) => rank(a) - rank(b) || nameOf(a.participant).localeCompare(nameOf(b.participant)) || a.participant.localeCompare(b.participant));
  }

  /** @param {HealthMessage} m */
  function renderTable(m) {
    const list = ordered(m.participants ?? []);
    const alerts = alerting();
    /** @type {Set<string>} */
    const seen = new Set();
    for (const ph of list) {
      const row = rows.get(ph.participant) ?? createRow(ph.participant);
      updateRow(row, ph, m.at, alerts);
      seen.add(ph.participant);
    }
    for (const [id, row] of rows) {
      if (seen.has(id)) continue;
      if (row.statusTimer) clearTimeout(row.statusTimer);
      row.tr.remove();
      rows.delete(id);
    }
    // Reorder only when the order changed (moving a row loses its focus: given back).
    const want = list.map((ph) => /** @type {Row} */ (rows.get(ph.participant)).tr);
    const have = [...tbody.children];
    if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) {
      const active = document.activeElement;
      for (const tr of want) tbody.append(tr);
      if (active instanceof HTMLElement && active.isConnected && document.activeElement !== active) active.focus();
    }
    emptyEl.classList.toggle('hidden', list.length > 0);
    emptyEl.textContent = S.tech.waiting;
    // Who is connected without media (the chair's console, say).
    const away = [...store.participants.values()].filter((p) => p.presence === 'joined' && !seen.has(p.id)).map((p) => p.name);
    noMediaEl.textContent = away.length ? S.tech.noMedia(away.join(', ')) : '';
  }

  // ------------------------------------------------------------------ the room beside the program
  /**
   * @param {string} label
   * @param {Node | string} value
   * @param {boolean} [wide] the value spans the rest of the line
   */
  const metric = (label, value, wide = false) => [h('dt', {}, label), h('dd', { class: wide ? 'wide' : undefined }, value)];

  /** @param {HealthMessage} m */
  function renderRoom(m) {
    const rooms = [...store.participants.values()].filter((p) => p.role === 'room');
    const ph = (m.participants ?? []).find((x) => rooms.some((p) => p.id === x.participant));
    const title = h('h2', { id: 'room-health-title' }, S.tech.roomTitle);
    roomCard.dataset.updated = String(m.at);
    if (!ph) {
      const connected = rooms.some((p) => p.presence === 'joined');
      roomCard.dataset.grade = 'none';
      fill(roomCard, title, h('p', { class: 'empty', id: 'room-none' }, connected ? S.tech.roomNotSending : S.tech.noRoom));
      return;
    }
    const p = store.participants.get(ph.participant);
    const up = ph.up;
    roomCard.dataset.room = ph.participant;
    roomCard.dataset.grade = up?.grade ?? 'none';
    const notes = upNotes(ph);
    fill(
      roomCard,
      title,
      h('p', { class: 'room-who' }, h('strong', {}, p?.name ?? ph.participant), p?.delegation ? h('span', { class: 'who-del' }, ` · ${p.delegation}`) : null),
      up
        ? h('div', { class: 'room-score', id: 'room-score', 'data-score': String(up.score) }, scoreView(up, [], S.tech.notSending, { big: true }))
        : h('p', { class: 'empty', id: 'room-score' }, S.tech.roomNotSending),
      up ? sparkline(up.history, S.tech.roomTitle, up.grade, true) : null,
      h(
        'dl',
        { class: 'metrics' },
        metric(S.tech.col.loss, num(up?.loss_pct, 1) ?? S.tech.none),
        metric(S.tech.col.jitter, num(up?.jitter_ms) ?? S.tech.none),
        metric(S.tech.col.rtt, num(up?.rtt_ms) ?? S.tech.none),
        metric(S.tech.col.kbps, num(up?.kbps) ?? S.tech.none),
        metric(S.tech.roomVideo, picture(up, ph.client?.up, true) ?? S.tech.none),
        metric(S.tech.col.network, network(ph)),
        metric(S.tech.col.level, levelMeter(ph.level), true),
      ),
      notes.length ? h('p', { class: 'client-note' }, notes.join(' · ')) : null,
      ph.down
        ? h('p', { class: 'muted room-down' }, `${S.tech.roomReceives}: `, h('span', { class: 'score', 'data-grade': ph.down.grade }, h('b', { class: 'score-n' }, String(ph.down.score)), ' ', h('span', { class: 'grade' }, S.health.grade[ph.down.grade])), ph.down.cause ? ` · ${S.health.cause[ph.down.cause]}` : '')
        : null,
    );
  }

  // ------------------------------------------------------------------ alerts
  /** @type {Set<number>} alerts already announced (or present when the page opened) */
  const announced = new Set();
  let firstAlerts = true;
  let alertSig = '';

  /** @param {string} text */
  function say(text) {
    alertLive.append(h('p', {}, text));
    while (alertLive.childElementCount > 5) alertLive.firstElementChild?.remove();
  }

  /** @param {AlertInfo} a */
  function alertWho(a) {
    return a.participant ? nameOf(a.participant) : S.health.server;
  }

  /** @param {AlertInfo} a */
  async function ack(a) {
    if (!(await act('ack_alert', { alert: a.id }))) return;
    // The button goes once the server says so; keep the focus on the alert itself.
    if (document.activeElement === document.body || !document.activeElement?.isConnected) document.getElementById(`alert-${a.id}`)?.focus();
  }

  /** @param {AlertInfo} a */
  function alertItem(a) {
    const kind = S.health.kind[a.kind] ?? a.kind;
    const whoText = alertWho(a) + (a.direction ? ` (${S.health.direction[a.direction]})` : '');
    const open = a.cleared_at === undefined;
    const meta = [a.cleared_at !== undefined ? S.tech.cleared(fmtTime(a.cleared_at)) : '', a.acked_by ? S.tech.acked(nameOf(a.acked_by), fmtTime(a.acked_at)) : ''].filter(Boolean);
    return h(
      'li',
      { id: `alert-${a.id}`, 'data-alert': a.id, 'data-kind': a.kind, 'data-open': String(open), 'data-acked': String(!!a.acked_by), tabindex: '-1' },
      h(
        'div',
        { class: 'alert-head' },
        h('time', { class: 'alert-time', datetime: new Date(a.raised_at).toISOString() }, fmtTime(a.raised_at)),
        h('span', { class: 'alert-state' }, open ? S.tech.open : S.tech.ended),
        h('strong', { class: 'alert-kind' }, kind),
        h('span', { class: 'alert-who' }, whoText),
      ),
      h('div', { class: 'alert-detail' }, a.detail),
      meta.length ? h('div', { class: 'alert-meta' }, meta.join(' · ')) : null,
      a.acked_by ? null : h('button', { type: 'button', class: 'small', id: `ack-${a.id}`, 'data-act': 'ack', 'aria-label': S.tech.ackLabel(kind, alertWho(a)), onclick: () => void ack(a) }, S.tech.ack),
    );
  }

  function renderAlerts() {
    const list = [...store.alerts.values()].sort((a, b) => b.raised_at - a.raised_at || b.id - a.id);
    // Announce what is new and still on (on opening the page: how many are open).
    const fresh = list.filter((a) => !announced.has(a.id));
    for (const a of fresh) announced.add(a.id);
    const freshOpen = fresh.filter((a) => a.cleared_at === undefined).reverse();
    if (firstAlerts) {
      if (freshOpen.length) say(S.tech.alertsOpenAnnounce(freshOpen.length));
    } else {
      for (const a of freshOpen) say(S.tech.alertAnnounce(S.health.kind[a.kind] ?? a.kind, alertWho(a), a.detail));
    }
    firstAlerts = false;
    const open = list.filter((a) => a.cleared_at === undefined).length;
    alertCountEl.textContent = S.tech.openAlerts(open);
    alertCountEl.dataset.level = open ? 'warn' : 'ok';
    const sig = JSON.stringify(list.map((a) => [a.id, a.cleared_at, a.acked_by, a.acked_at, a.detail, a.participant ? nameOf(a.participant) : '']));
    if (sig === alertSig) return;
    alertSig = sig;
    keepFocus(alertsPanel, () => fill(alertList, list.length ? list.slice(0, 200).map(alertItem) : h('li', { class: 'empty' }, S.tech.noAlerts)));
  }

  // ------------------------------------------------------------------ header
  let lastHealthLocal = 0;
  /** @type {HealthMessage | null} */
  let lastHealth = null;
  function renderHeader() {
    const you = store.you;
    if (you) {
      fill(titleBox, h('div', { class: 'title' }, store.meeting?.title ?? ''), h('div', { class: 'sub' }, `${S.tech.title} · ${you.name}`));
      document.title = `roundtable · ${S.tech.title}`;
    }
  }
  function renderFreshness() {
    if (!lastHealth) return;
    const age = performance.now() - lastHealthLocal;
    if (age > STALE_MS) {
      updatedEl.dataset.level = 'warn';
      updatedEl.textContent = `⚠ ${S.tech.stale(Math.round(age / 1000))}`;
    } else {
      updatedEl.dataset.level = 'ok';
      updatedEl.textContent = S.tech.updated(fmtTime(lastHealth.at));
    }
  }
  setInterval(renderFreshness, 1000);

  conn.on('health', (m) => {
    lastHealth = m;
    lastHealthLocal = performance.now();
    const cpu = Math.round(m.cpu_pct ?? 0);
    const high = cpu >= 80;
    cpuEl.dataset.level = high ? 'warn' : 'ok';
    cpuEl.textContent = `${high ? '⚠ ' : ''}${S.tech.cpu(cpu)}${high ? ` · ${S.tech.cpuHigh}` : ''}`;
    renderAlerts();
    renderTable(m);
    renderRoom(m);
    renderFreshness();
  });
  conn.on('alert', () => {
    renderAlerts();
    if (lastHealth) renderTable(lastHealth);
  });
  store.on('change', () => {
    renderHeader();
    // Names and roles may have changed (someone joined): the next report shows them; the
    // last one is shown again now.
    if (lastHealth) {
      renderTable(lastHealth);
      renderRoom(lastHealth);
    }
  });
  conn.on('joined', () => {
    lastHealth = null;
    updatedEl.dataset.level = 'unknown';
    updatedEl.textContent = S.tech.waiting;
  });
  renderHeader();

  Object.assign(/** @type {any} */ (window).__rt, { media, stats: () => sampleStats(media), actions, health: () => store.health });
}
