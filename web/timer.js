// @ts-check
/**
 * The lectern timer: a huge countdown for the current speaker (or the current item), with
 * wrap-up (yellow) and danger (red) phases named in text, the overrun counting up, and the
 * chair's message. Opens with any role's token (`/timer?token=...`); it only listens.
 */

import { S } from './strings.js';
import { h, fill, $, boot, fmtDuration, every, mainClock } from './ui.js';

const app = $('app');
const conn = (() => {
  try {
    return boot({ reconnectForever: true });
  } catch {
    return null;
  }
})();

if (conn) {
  const store = conn.store;
  const whoEl = h('div', { class: 'timer-who', id: 'timer-who' });
  const clockEl = h('div', { class: 'timer-clock countdown', id: 'timer-clock' });
  const phaseEl = h('div', { class: 'timer-phase phase-label', id: 'timer-phase', 'aria-live': 'polite' });
  const msgEl = h('div', { class: 'timer-msg hidden', id: 'timer-msg', role: 'status', 'aria-live': 'assertive' });
  const stage = h('div', { class: 'timer-stage', id: 'timer-stage', 'data-phase': 'idle' }, whoEl, clockEl, phaseEl, msgEl);
  fill(app, stage);

  let lastPhase = '';
  every(() => {
    const c = mainClock(store, conn.clock);
    stage.dataset.phase = c.phase;
    clockEl.dataset.phase = c.phase;
    phaseEl.dataset.phase = c.phase;
    const r = c.request;
    whoEl.textContent = r ? `${r.beneficiary.name}${r.beneficiary.delegation ? ' · ' + r.beneficiary.delegation : ''}` : c.item ? c.item.title : S.timer.nothing;
    clockEl.textContent = c.remaining === undefined ? '' : fmtDuration(c.remaining);
    const label =
      c.phase === 'idle' ? (c.item ? '' : S.timer.nothing) : c.phase === 'none' ? S.phase.none : c.phase === 'paused' ? S.phase.paused : S.phase[c.phase];
    if (label !== lastPhase) {
      phaseEl.textContent = label;
      lastPhase = label;
    }
    const msg = store.timerMessage;
    msgEl.classList.toggle('hidden', !msg);
    if (msgEl.textContent !== msg) msgEl.textContent = msg;
    /** @type {any} */ (window).__rt.timer = { phase: c.phase, remaining: c.remaining, text: clockEl.textContent, label, who: whoEl.textContent, message: msg };
  }, 100);
}
