// @ts-check
/**
 * The room screen: the remote floor holder (or a presenter's screen) large, the slot timer,
 * the queue ticker; publishes the room camera and the room sound as `program` (simulcast);
 * plays every remote voice it receives (the server never sends the room its own program).
 * It rejoins by itself after any failure, forever: a websocket drop reconnects with backoff,
 * a media failure restarts the whole connection with backoff.
 */

import { MediaSession, sampleStats } from './protocol.js';
import { S, ordinal } from './strings.js';
import { h, fill, $, boot, announceQueue, fmtDuration, every, playAudio, mainClock, toast } from './ui.js';

/** @typedef {import('./protocol.js').ReceivedTrack} ReceivedTrack */

const app = $('app');
const conn = (() => {
  try {
    return boot({ reconnectForever: true });
  } catch {
    return null;
  }
})();
if (conn) start(conn);

/** @param {import('./protocol.js').Connection} conn */
function start(conn) {
  const store = conn.store;
  announceQueue(store);

  /** @type {MediaStream | null} */
  let local = null;
  /** @type {Promise<MediaStream | null> | null} */
  let opening = null;
  async function openDevices() {
    if (local && local.getTracks().every((t) => t.readyState === 'live')) return local;
    if (opening) return opening;
    opening = navigator.mediaDevices
      .getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      })
      .then((s) => {
        local = s;
        return s;
      })
      .catch((e) => {
        toast(`${S.room.cameraError}: ${e instanceof Error ? e.message : e}`);
        return null;
      })
      .finally(() => {
        opening = null;
      });
    return opening;
  }

  const media = new MediaSession(conn, {
    subscribe: true,
    tracks: async () => {
      const s = await openDevices();
      if (!s) return [];
      /** @type {import('./protocol.js').PublishTrackSpec[]} */
      const specs = [];
      const a = s.getAudioTracks()[0];
      const v = s.getVideoTracks()[0];
      if (a) specs.push({ track: a, source: 'program' });
      if (v) specs.push({ track: v, source: 'program', simulcast: true });
      return specs;
    },
  });

  /** @type {Map<string, ReceivedTrack>} */
  const received = new Map();
  const audioHost = h('div', { class: 'hidden' });
  document.body.append(audioHost);
  media.on('track', (t) => {
    received.set(t.mid, t);
    if (t.track.kind === 'audio') playAudio(t.track, audioHost);
    t.track.addEventListener('unmute', render);
    t.track.addEventListener('mute', render);
    render();
  });
  media.on('slots', () => render());

  // Full restart with backoff after a media failure, forever.
  let failures = 0;
  media.on('state', (s, why) => {
    if (s === 'connected') failures = 0;
    status.textContent = s === 'connected' ? S.room.publishing : s === 'failed' ? S.media.failedBecause(why) : s === 'connecting' ? S.media.connecting : s === 'reconnecting' ? S.media.reconnecting : '';
  });
  media.on('failed', () => {
    const delay = Math.min(30000, 1000 * 2 ** Math.min(failures++, 5));
    setTimeout(() => conn.restart('media failed'), delay);
  });
  // A closed connection (e.g. replaced) still comes back: reconnectForever; the welcome restarts media.
  // Removed by the chair is the exception: the page says so (ui.js) and the devices go off.
  conn.on('state', (s, why) => {
    if (s !== 'closed' || why !== 'removed') return;
    media.close();
    for (const t of local?.getTracks() ?? []) t.stop();
  });

  // ------------------------------------------------------------------ layout
  const itemEl = h('div', { class: 'item', id: 'room-item' });
  const timerEl = h('div', { class: 'room-timer', id: 'room-timer', 'data-phase': 'idle' });
  const mainEl = h('div', { class: 'room-main', id: 'room-main' });
  const speakerEl = h('div', { class: 'room-speaker hidden', id: 'room-speaker' });
  const tickerEl = h('div', { class: 'room-ticker', id: 'room-ticker', 'aria-live': 'polite' });
  const status = h('span', { class: 'muted', id: 'room-status' });
  const fsBtn = h('button', { type: 'button', id: 'fullscreen' }, S.room.fullscreen);
  fsBtn.addEventListener('click', () => {
    if (document.fullscreenElement) void document.exitFullscreen();
    else void document.documentElement.requestFullscreen().catch(() => {});
  });
  document.addEventListener('fullscreenchange', () => {
    fsBtn.textContent = document.fullscreenElement ? S.room.exitFullscreen : S.room.fullscreen;
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'f' || ev.key === 'F') fsBtn.click();
  });
  fill(
    app,
    h('div', { class: 'room-stage' }, h('div', { class: 'room-head' }, itemEl, timerEl), h('div', { class: 'room-main-wrap', style: 'position:relative;min-height:0;display:flex' }, mainEl, speakerEl), tickerEl),
    h('div', { class: 'room-controls' }, status, fsBtn),
  );
  const idle = h('div', { class: 'idle' });
  /** Videos not shown stay attached here, playing, so they have a picture when shown. */
  const offstage = h('div', { class: 'offstage', 'aria-hidden': 'true' });
  document.body.append(offstage);
  /** @type {Map<string, HTMLVideoElement>} */
  const videos = new Map();
  /** @param {ReceivedTrack} t */
  function videoFor(t) {
    let v = videos.get(t.mid);
    if (!v) {
      v = h('video', { autoplay: true, muted: true, playsinline: true, 'data-mid': t.mid });
      v.muted = true;
      v.srcObject = new MediaStream([t.track]);
      v.addEventListener('resize', render);
      offstage.append(v);
      videos.set(t.mid, v);
    }
    return v;
  }

  function render() {
    const f = store.floor;
    const item = store.currentItem();
    itemEl.textContent = item ? item.title : store.meeting?.title ?? '';
    if (!f) return;
    // What fills the screen: a presenter's screen, else the remote holder's camera.
    /** @type {ReceivedTrack | undefined} */
    let screen;
    /** @type {ReceivedTrack | undefined} */
    let speaker;
    for (const t of received.values()) {
      if (t.track.kind !== 'video') continue;
      if (t.slot.slot === 'screen' && !t.track.muted) screen = t;
      if (t.slot.slot === 'speaker') speaker = t;
    }
    const holder = f.holders.find((r) => !r.chair) ?? f.holders[0] ?? null;
    const remote = holder && !holder.beneficiary.in_room ? holder : null;
    // A slot is shown once it has a picture (until then: the name card).
    const hasPicture = (/** @type {ReceivedTrack | undefined} */ t) => !!t && videoFor(t).videoWidth > 0;
    const show = hasPicture(screen) ? screen : remote && hasPicture(speaker) ? speaker : undefined;
    if (show) {
      const v = videoFor(show);
      for (const old of mainEl.querySelectorAll('video')) if (old !== v) offstage.append(old);
      if (v.parentElement !== mainEl) fill(mainEl, v);
    } else {
      for (const old of mainEl.querySelectorAll('video')) offstage.append(old);
      const meeting = store.meeting;
      fill(
        idle,
        holder ? h('div', { class: 't' }, holder.beneficiary.name) : h('div', { class: 't' }, meeting?.title ?? ''),
        holder ? h('div', { class: 's' }, [holder.beneficiary.delegation, holder.beneficiary.in_room ? S.floor.inRoom : ''].filter(Boolean).join(' · ')) : h('div', { class: 's' }, meeting?.venue ?? ''),
      );
      if (idle.parentElement !== mainEl) fill(mainEl, idle);
    }
    if (holder && show) {
      fill(speakerEl, '◉ ', holder.beneficiary.name, holder.beneficiary.delegation ? h('span', { class: 'who-del' }, ` · ${holder.beneficiary.delegation}`) : null);
      speakerEl.classList.remove('hidden');
    } else {
      speakerEl.classList.add('hidden');
    }
    // Ticker: who speaks next
    const waiting = [...f.replies.map((r) => ({ r, reply: true })), ...f.queue.map((r) => ({ r, reply: false }))];
    fill(
      tickerEl,
      h('span', { class: 'label' }, `${S.room.next}:`),
      waiting.length
        ? waiting.slice(0, 6).map(({ r, reply }, i) => h('span', { class: 'tick' }, `${i ? '   ·   ' : ''}${ordinal(i + 1)} ${r.beneficiary.name}${r.beneficiary.delegation ? ` (${r.beneficiary.delegation})` : ''}${reply ? ` [${S.floor.replies}]` : ''}`))
        : h('span', { class: 'muted' }, S.floor.emptyQueue),
    );
  }

  every(() => {
    const c = mainClock(store, conn.clock);
    timerEl.dataset.phase = c.phase;
    if (c.remaining === undefined) {
      fill(timerEl, c.phase === 'none' ? h('span', { class: 'phase-label' }, S.phase.none) : '');
      return;
    }
    const label = c.phase === 'paused' ? S.phase.paused : c.phase === 'idle' || c.phase === 'none' ? '' : S.phase[c.phase];
    fill(timerEl, fmtDuration(c.remaining), h('span', { class: 'phase-label' }, label));
  }, 200);

  store.on('change', render);
  // Every join (welcome or resumed) restarts media afresh: forget the old connection's tracks.
  conn.on('joined', () => {
    received.clear();
    videos.clear();
    audioHost.replaceChildren();
  });
  render();

  Object.assign(/** @type {any} */ (window).__rt, { media, stats: () => sampleStats(media) });
}
