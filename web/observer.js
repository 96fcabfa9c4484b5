// @ts-check
/**
 * Listen and watch only (role observer): subscribes, never publishes. The room program
 * large, the floor holder beside it, the speakers list.
 */

import { MediaSession, sampleStats } from './protocol.js';
import { S, ordinal } from './strings.js';
import { h, fill, $, boot, announceQueue, every, fmtDuration, playAudio, who, mainClock } from './ui.js';

/** @typedef {import('./protocol.js').ReceivedTrack} ReceivedTrack */

const app = $('app');
const conn = (() => {
  try {
    return boot();
  } catch {
    return null;
  }
})();

if (conn) {
  const store = conn.store;
  announceQueue(store);
  const media = new MediaSession(conn, { subscribe: true });
  /** @type {Map<string, ReceivedTrack>} */
  const received = new Map();
  /** @type {Map<string, HTMLVideoElement>} */
  const videos = new Map();
  const audioHost = h('div', { class: 'hidden' });
  document.body.append(audioHost);
  media.on('track', (t) => {
    received.set(t.mid, t);
    if (t.track.kind === 'audio') playAudio(t.track, audioHost);
    render();
  });
  media.on('failed', () => setTimeout(() => conn.restart('media failed'), 2000));
  conn.on('joined', () => {
    received.clear();
    videos.clear();
    audioHost.replaceChildren();
  });

  const header = h('header', { class: 'top' });
  const programBox = h('div', { class: 'video-box', id: 'program-box' }, h('div', { class: 'placeholder' }, S.media.connecting));
  const speakerBox = h('div', { class: 'video-box hidden', id: 'speaker-box' });
  const clockEl = h('div', { class: 'countdown', id: 'obs-clock', style: 'font-size:2rem' });
  const side = h('section', { class: 'panel', id: 'queue' });
  fill(
    app,
    header,
    h(
      'main',
      {},
      h('div', { class: 'd-layout' }, h('div', { class: 'stack' }, programBox, speakerBox), h('div', { class: 'stack' }, clockEl, side)),
    ),
  );

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

  function render() {
    const you = store.you;
    const f = store.floor;
    if (!you || !f) return;
    fill(header, h('div', {}, h('div', { class: 'title' }, store.meeting?.title ?? ''), h('div', { class: 'sub' }, `${you.name} · ${S.role[you.role]} · ${S.observer.listen}`)));
    for (const t of received.values()) {
      if (t.track.kind !== 'video') continue;
      if (t.slot.slot === 'track' && t.slot.source === 'program') {
        const v = videoFor(t);
        if (v.parentElement !== programBox) fill(programBox, v, h('span', { class: 'video-label' }, S.delegate.roomVideo));
      }
      if (t.slot.slot === 'speaker') {
        const holder = f.holders.find((r) => !r.beneficiary.in_room && !r.chair);
        if (holder) {
          const v = videoFor(t);
          if (v.parentElement !== speakerBox) fill(speakerBox, v, h('span', { class: 'video-label' }, ''));
          const label = speakerBox.querySelector('.video-label');
          if (label) label.textContent = `${S.delegate.speakerVideo}: ${holder.beneficiary.name}`;
        }
        speakerBox.classList.toggle('hidden', !holder);
      }
    }
    const item = store.currentItem();
    fill(
      side,
      h('h2', {}, item ? item.title : S.agenda.noItem),
      h('h3', {}, S.floor.speakingNow),
      f.holders.length ? h('ol', { class: 'reqs' }, f.holders.map((r) => h('li', {}, h('span', { class: 'pos' }, '◉'), who(r)))) : h('p', { class: 'empty' }, S.floor.nobodySpeaking),
      h('h3', {}, S.floor.queue),
      f.queue.length ? h('ol', { class: 'reqs' }, f.queue.map((r) => h('li', {}, h('span', { class: 'pos' }, ordinal(r.position ?? 0)), who(r)))) : h('p', { class: 'empty' }, S.floor.emptyQueue),
      f.replies.length ? [h('h3', {}, S.floor.replies), h('ol', { class: 'reqs' }, f.replies.map((r) => h('li', {}, h('span', { class: 'pos' }, ordinal(r.position ?? 0)), who(r))))] : null,
    );
  }
  store.on('change', render);
  every(() => {
    const c = mainClock(store, conn.clock);
    clockEl.dataset.phase = c.phase;
    clockEl.textContent = c.remaining === undefined ? '' : `${fmtDuration(c.remaining)} · ${c.phase === 'idle' ? '' : c.phase === 'paused' ? S.phase.paused : c.phase === 'none' ? S.phase.none : S.phase[c.phase]}`;
  }, 250);
  Object.assign(/** @type {any} */ (window).__rt, { media, stats: () => sampleStats(media) });
}
