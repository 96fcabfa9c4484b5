// @ts-check
/**
 * The chair's console (role moderator) and, reduced, the floor assistant's (role assistant):
 * the agenda with its controls and projected end, the floor (speaking now, pending, speakers
 * list, reply list) with grant / deny / revoke / next / reorder / lower all hands, in-room
 * speakers by name, floor settings, the lectern timer message, minutes, participants.
 *
 * The assistant may `request_for`, `cancel` the requests they made, and raise their own hand;
 * everything else is the chair's (docs/SECURITY.md).
 *
 * The participants panel lists who is connected; the chair can give one the floor, ask one to
 * reconnect (`ask_reconnect`: their page reconnects at once and restarts its media, keeping
 * its place) or remove one (`remove`, after an inline confirmation: their page closes for
 * good and their requests end).
 *
 * Floor alerts (`alert` with `floor: true`: the floor holder's microphone silent, or speech
 * from someone without the floor) show above the console until the chair acknowledges them
 * (`ack_alert`); new ones are announced.
 */

import { countdownOf } from './protocol.js';
import { S, ordinal } from './strings.js';
import { h, fill, $, boot, announce, announceQueue, fmtDuration, fmtClock, fmtTime, phaseOf, every, who, toast, keepFocus } from './ui.js';

/** @typedef {import('./protocol.js').RequestInfo} RequestInfo */
/** @typedef {import('./protocol.js').ItemInfo} ItemInfo */
/** @typedef {import('./protocol.js').Participant} Participant */
/** @typedef {import('./protocol.js').AlertInfo} AlertInfo */

const app = $('app');
const conn = (() => {
  try {
    return boot();
  } catch {
    return null;
  }
})();
if (conn) start(conn);

/** @param {import('./protocol.js').Connection} conn */
function start(conn) {
  const store = conn.store;
  announceQueue(store);
  const token = conn.token;

  /** @param {string} type @param {Record<string, unknown>} [fields] */
  const cmd = (type, fields) => conn.send(type, fields).catch(() => null);

  const header = h('header', { class: 'top' });
  const agendaPanel = h('section', { class: 'panel', id: 'agenda', 'aria-labelledby': 'agenda-title' });
  const floorPanel = h('section', { class: 'panel', id: 'floor', 'aria-labelledby': 'floor-title' });
  const sidePanel = h('section', { class: 'stack', id: 'side' });
  const floorAlertsBox = h('section', { class: 'floor-alerts hidden', id: 'floor-alerts', 'aria-labelledby': 'floor-alerts-title' });
  fill(app, header, floorAlertsBox, h('main', {}, agendaPanel, floorPanel, sidePanel));

  let isChair = false;

  // ------------------------------------------------------------------ static forms (built once)
  const nameIn = h('input', { id: 'inroom-name', required: true, maxlength: '100', autocomplete: 'off' });
  const delIn = h('input', { id: 'inroom-delegation', maxlength: '100', autocomplete: 'off' });
  const listSel = h('select', { id: 'inroom-list' }, h('option', { value: 'main' }, S.mod.listMain), h('option', { value: 'reply' }, S.mod.listReply));
  const inRoomForm = h(
    'form',
    { id: 'inroom-form', class: 'panel' },
    h('h2', {}, S.mod.addInRoom),
    h('label', { for: 'inroom-name' }, S.mod.name),
    nameIn,
    h('label', { for: 'inroom-delegation' }, S.mod.delegation),
    delIn,
    h('label', { for: 'inroom-list' }, S.mod.list),
    listSel,
    h('div', { class: 'row', style: 'margin-top:.6rem' }, h('button', { type: 'submit', class: 'primary', id: 'inroom-add' }, S.mod.add)),
  );
  inRoomForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = nameIn.value.trim();
    if (!name) return;
    const ok = await cmd('request_for', { name, delegation: delIn.value.trim(), list: listSel.value });
    if (ok) {
      nameIn.value = '';
      delIn.value = '';
      nameIn.focus();
    }
  });

  const policySel = h('select', { id: 'set-policy' }, h('option', { value: 'moderated' }, S.mod.moderated), h('option', { value: 'open' }, S.mod.open));
  const maxIn = h('input', { id: 'set-max', type: 'number', min: '1', max: '10' });
  const fullSel = h('select', { id: 'set-full' }, h('option', { value: 'wait' }, S.mod.wait), h('option', { value: 'override' }, S.mod.override));
  const limitIn = h('input', { id: 'set-limit', type: 'number', min: '0', max: '3600' });
  const warnIn = h('input', { id: 'set-warning', type: 'number', min: '0', max: '3600' });
  const autoIn = h('input', { id: 'set-auto', type: 'checkbox' });
  const screenIn = h('input', { id: 'set-screen', type: 'checkbox' });
  const settingsForm = h(
    'form',
    { id: 'settings-form', class: 'panel' },
    h('h2', {}, S.mod.floorSettings),
    h('label', { for: 'set-policy' }, S.mod.policy),
    policySel,
    h('label', { for: 'set-max' }, S.mod.maxSpeakers),
    maxIn,
    h('label', { for: 'set-full' }, S.mod.whenFull),
    fullSel,
    h('label', { for: 'set-limit' }, S.mod.speakingLimit),
    limitIn,
    h('label', { for: 'set-warning' }, S.mod.warning),
    warnIn,
    h('label', { class: 'row' }, autoIn, S.mod.autoRevoke),
    h('label', { class: 'row' }, screenIn, S.mod.screen),
    h('div', { class: 'row', style: 'margin-top:.6rem' }, h('button', { type: 'submit', class: 'primary', id: 'settings-apply' }, S.mod.apply)),
  );
  let settingsDirty = false;
  settingsForm.addEventListener('input', () => (settingsDirty = true));
  settingsForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const ok = await cmd('set_floor', {
      settings: {
        policy: policySel.value,
        max_speakers: Number(maxIn.value),
        when_full: fullSel.value,
        speaking_limit_secs: Number(limitIn.value),
        warning_secs: Number(warnIn.value),
        auto_revoke: autoIn.checked,
        screen_requests: screenIn.checked,
      },
    });
    if (ok) {
      settingsDirty = false;
      fillSettings();
    }
  });
  function fillSettings() {
    const f = store.floor;
    if (!f || settingsDirty) return;
    policySel.value = f.policy;
    maxIn.value = String(f.max_speakers);
    fullSel.value = f.when_full;
    limitIn.value = String(Math.round(f.speaking_limit_ms / 1000));
    warnIn.value = String(Math.round(f.warning_ms / 1000));
    autoIn.checked = f.auto_revoke;
    screenIn.checked = f.screen_requests;
  }

  const msgIn = h('input', { id: 'timer-text', maxlength: '280', autocomplete: 'off' });
  const msgNow = h('p', { class: 'muted', id: 'timer-now' });
  const msgForm = h(
    'form',
    { id: 'timer-form', class: 'panel' },
    h('h2', {}, S.mod.timerMessage),
    h('label', { for: 'timer-text' }, S.mod.timerMessage),
    msgIn,
    msgNow,
    h(
      'div',
      { class: 'row', style: 'margin-top:.6rem' },
      h('button', { type: 'submit', class: 'primary', id: 'timer-send' }, S.mod.send),
      h('button', { type: 'button', id: 'timer-clear', onclick: () => void cmd('timer_message', { text: '' }) }, S.mod.clear),
      h('a', { class: 'button', href: `/timer?token=${encodeURIComponent(token)}`, target: '_blank', rel: 'noopener' }, S.mod.timerLink),
    ),
  );
  msgForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (await cmd('timer_message', { text: msgIn.value })) msgIn.value = '';
  });

  const minutesPanel = h(
    'section',
    { class: 'panel', id: 'minutes' },
    h('h2', {}, S.mod.minutes),
    h(
      'div',
      { class: 'row' },
      h('a', { class: 'button', id: 'minutes-md', href: `/api/minutes?format=md&token=${encodeURIComponent(token)}`, download: 'minutes.md' }, S.mod.minutesMd),
      h('a', { class: 'button', id: 'minutes-csv', href: `/api/minutes?format=csv&token=${encodeURIComponent(token)}`, download: 'minutes.csv' }, S.mod.minutesCsv),
    ),
  );

  const shortcutsPanel = h(
    'section',
    { class: 'panel shortcuts', id: 'shortcuts' },
    h('h2', {}, S.mod.shortcuts),
    h('dl', {}, S.mod.shortcutList.flatMap(([k, what]) => [h('dt', {}, h('kbd', {}, k)), h('dd', {}, what)])),
    h('p', { class: 'muted' }, S.mod.dragHint),
  );
  const partsPanel = h('section', { class: 'panel', id: 'participants' });

  // ------------------------------------------------------------------ agenda
  function nextPlanned() {
    return store.agenda?.items.find((i) => i.state === 'planned') ?? null;
  }
  function startNext() {
    const cur = store.currentItem();
    const next = nextPlanned();
    if (cur && next) return cmd('agenda_jump', { item: next.id });
    if (cur) return cmd('agenda_end');
    return cmd('agenda_start');
  }

  /** @type {HTMLElement | null} */
  let itemClock = null;
  function renderAgenda() {
    const a = store.agenda;
    if (!a) return;
    const cur = store.currentItem();
    const n = a.items.length;
    itemClock = h('div', { class: 'countdown', id: 'item-clock' });
    const curBox = cur
      ? h(
          'div',
          { class: 'current-item', id: 'current-item' },
          h('div', { class: 'muted' }, `${S.agenda.kind[cur.kind]} · ${S.agenda.state[cur.state]}`),
          h('div', { class: 'item-title' }, cur.title),
          itemClock,
          h('div', { class: 'phase-label', id: 'item-phase' }),
          isChair
            ? h(
                'div',
                { class: 'row' },
                cur.state === 'running'
                  ? h('button', { type: 'button', id: 'ag-pause', onclick: () => void cmd('agenda_pause') }, `‖ ${S.mod.pause}`)
                  : h('button', { type: 'button', id: 'ag-resume', onclick: () => void cmd('agenda_resume') }, `▶ ${S.mod.resume}`),
                h('button', { type: 'button', id: 'ag-extend1', onclick: () => void cmd('agenda_extend', { minutes: 1 }) }, S.mod.extend1),
                h('button', { type: 'button', id: 'ag-extend5', onclick: () => void cmd('agenda_extend', { minutes: 5 }) }, S.mod.extend5),
                h('button', { type: 'button', id: 'ag-end', class: 'bad', onclick: () => void cmd('agenda_end') }, `■ ${S.mod.end}`),
                nextPlanned() ? h('button', { type: 'button', id: 'ag-next', class: 'primary', onclick: () => void startNext() }, `» ${S.mod.nextItem}`) : null,
              )
            : null,
        )
      : h(
          'div',
          { class: 'current-item', id: 'current-item' },
          h('p', { class: 'muted' }, S.agenda.noItem),
          isChair && nextPlanned() ? h('button', { type: 'button', class: 'primary', id: 'ag-start', onclick: () => void cmd('agenda_start') }, `▶ ${S.mod.startNext}`) : null,
        );
    const items = a.items.map((it, i) =>
      h(
        'li',
        { 'data-state': it.state, 'data-item': it.id },
        h(
          'div',
          { class: 'row' },
          h('span', { class: 'state' }, S.agenda.state[it.state]),
          h('span', { class: 'item-title', style: 'flex:1' }, it.title),
          h('span', { class: 'muted' }, S.agenda.minutes(Math.round((it.planned_ms + it.extended_ms) / 60000))),
        ),
        it.presenters.length ? h('div', { class: 'muted' }, it.presenters.map((p) => `${p.name}${p.organisation ? ` (${p.organisation})` : ''}${p.participant ? '' : ` · ${S.agenda.atLectern}`}`).join('; ')) : null,
        it.state === 'ended' && it.overrun_ms ? h('div', { 'data-phase': 'overrun' }, S.agenda.overrunBy(fmtDuration(it.overrun_ms).replace('+', ''))) : null,
        isChair && (it.state === 'planned' || it.state === 'skipped')
          ? h(
              'div',
              { class: 'row', style: 'margin-top:.3rem' },
              h('button', { type: 'button', class: 'small', onclick: () => void cmd(cur ? 'agenda_jump' : 'agenda_start', { item: it.id }) }, cur ? S.mod.jump : S.mod.startThis),
              it.state === 'planned' ? h('button', { type: 'button', class: 'small', onclick: () => void cmd('agenda_skip', { item: it.id }) }, S.mod.skip) : null,
              i > 0 ? h('button', { type: 'button', class: 'small', 'aria-label': `${S.mod.moveUp}: ${it.title}`, onclick: () => void cmd('agenda_move', { item: it.id, position: i }) }, '↑') : null,
              i < n - 1 ? h('button', { type: 'button', class: 'small', 'aria-label': `${S.mod.moveDown}: ${it.title}`, onclick: () => void cmd('agenda_move', { item: it.id, position: i + 2 }) }, '↓') : null,
            )
          : null,
      ),
    );
    fill(
      agendaPanel,
      h('h2', { id: 'agenda-title' }, S.agenda.title),
      curBox,
      h('p', {}, `${S.agenda.plannedEnd}: ${fmtClock(a.planned_end)} · `, h('strong', { id: 'projected-end' }, `${S.agenda.projectedEnd}: ${fmtClock(a.projected_end)}`)),
      h('ol', { class: 'agenda-list' }, items),
    );
  }

  // ------------------------------------------------------------------ floor
  /** @type {Map<number, HTMLElement>} */
  const holderClocks = new Map();

  /**
   * @param {RequestInfo[]} list
   * @param {'queue'|'replies'} which
   */
  function queueList(list, which) {
    if (!list.length) return h('p', { class: 'empty' }, S.floor.emptyQueue);
    const ol = h('ol', { class: 'reqs', id: `list-${which}`, 'aria-label': which === 'queue' ? S.floor.queue : S.floor.replies });
    for (const r of list) {
      const mine = r.requested_by === store.you?.id;
      const li = h(
        'li',
        { 'data-request': r.id, tabindex: isChair ? '0' : undefined, draggable: isChair ? 'true' : undefined, 'aria-label': `${ordinal(r.position ?? 0)}: ${r.beneficiary.name}` },
        h('span', { class: 'pos' }, ordinal(r.position ?? 0)),
        who(r, store.participants.get(r.beneficiary.participant)?.presence),
        h(
          'span',
          { class: 'actions' },
        isChair ? h('button', { type: 'button', class: 'small good', 'data-act': 'grant', onclick: () => void cmd('grant', { request: r.id }) }, S.mod.grant) : null,
          isChair ? h('button', { type: 'button', class: 'small', 'data-act': 'deny', onclick: () => void cmd('deny', { request: r.id }) }, S.mod.deny) : null,
          isChair ? h('button', { type: 'button', class: 'small', 'aria-label': `${S.mod.moveUp}: ${r.beneficiary.name}`, disabled: r.position === 1, onclick: () => move(r, -1) }, '↑') : null,
          isChair ? h('button', { type: 'button', class: 'small', 'aria-label': `${S.mod.moveDown}: ${r.beneficiary.name}`, disabled: r.position === list.length, onclick: () => move(r, +1) }, '↓') : null,
          !isChair && mine ? h('button', { type: 'button', class: 'small', 'data-act': 'cancel', onclick: () => void cmd('cancel', { request: r.id }) }, S.mod.cancel) : null,
        ),
      );
      if (isChair) {
        li.addEventListener('keydown', (ev) => {
          if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
            ev.preventDefault();
            move(r, ev.key === 'ArrowUp' ? -1 : +1);
          }
        });
        li.addEventListener('dragstart', (ev) => {
          ev.dataTransfer?.setData('text/plain', String(r.id));
          li.classList.add('dragging');
        });
        li.addEventListener('dragend', () => li.classList.remove('dragging'));
        li.addEventListener('dragover', (ev) => {
          ev.preventDefault();
          li.classList.add('drop-target');
        });
        li.addEventListener('dragleave', () => li.classList.remove('drop-target'));
        li.addEventListener('drop', (ev) => {
          ev.preventDefault();
          li.classList.remove('drop-target');
          const id = Number(ev.dataTransfer?.getData('text/plain'));
          const moving = list.find((x) => x.id === id);
          if (moving && moving.id !== r.id) void cmd('move', { request: moving.id, position: r.position ?? 1 });
        });
      }
      ol.append(li);
    }
    return ol;
  }

  /** @param {RequestInfo} r @param {number} delta */
  function move(r, delta) {
    const pos = (r.position ?? 1) + delta;
    if (pos < 1) return;
    void cmd('move', { request: r.id, position: pos });
  }

  function renderFloor() {
    const f = store.floor;
    if (!f) return;
    holderClocks.clear();
    const mine = store.requestOf();
    const holders = f.holders.length
      ? f.holders.map((r) => {
          const clock = h('span', { class: 'countdown', 'data-request': r.id });
          holderClocks.set(r.id, clock);
          return h(
            'div',
            { class: 'holder', 'data-request': r.id },
            h('span', {}, '◉'),
            who(r, store.participants.get(r.beneficiary.participant)?.presence),
            r.slot ? h('span', { class: 'tag' }, S.agenda.kind.presentation) : null,
            clock,
            isChair ? h('button', { type: 'button', class: 'small bad', 'data-act': 'revoke', onclick: () => void cmd('revoke', { request: r.id }) }, S.mod.revoke) : null,
            !isChair && r.requested_by === store.you?.id ? h('button', { type: 'button', class: 'small', 'data-act': 'cancel', onclick: () => void cmd('cancel', { request: r.id }) }, S.mod.cancel) : null,
          );
        })
      : [h('p', { class: 'empty' }, S.floor.nobodySpeaking)];
    const pending = f.pending.map((r) =>
      h(
        'li',
        { 'data-request': r.id },
        who(r, store.participants.get(r.beneficiary.participant)?.presence),
        isChair ? h('button', { type: 'button', class: 'small', onclick: () => void cmd('accept', { request: r.id }) }, S.mod.accept) : null,
        isChair ? h('button', { type: 'button', class: 'small good', onclick: () => void cmd('grant', { request: r.id }) }, S.mod.grant) : null,
        isChair ? h('button', { type: 'button', class: 'small', onclick: () => void cmd('deny', { request: r.id }) }, S.mod.deny) : null,
        !isChair && r.requested_by === store.you?.id ? h('button', { type: 'button', class: 'small', onclick: () => void cmd('cancel', { request: r.id }) }, S.mod.cancel) : null,
      ),
    );
    fill(
      floorPanel,
      h('h2', { id: 'floor-title' }, S.mod.floorTitle),
      h('p', { class: 'muted', id: 'floor-mode' }, `${S.floor.policy[f.policy]} · ${S.mod.micsAtMost(f.max_speakers)}`),
      isChair
        ? h(
            'div',
            { class: 'row', style: 'margin-bottom:.6rem' },
            h('button', { type: 'button', class: 'primary big', id: 'next-speaker', onclick: () => void cmd('next') }, `» ${S.mod.nextSpeaker}`),
            h('button', { type: 'button', id: 'lower-all', onclick: () => confirm(S.mod.lowerAllConfirm) && void cmd('lower_all_hands') }, S.mod.lowerAll),
            h('button', { type: 'button', class: 'bad', id: 'chair-priority', onclick: () => confirm(S.mod.chairPriorityConfirm) && void cmd('chair_priority') }, S.mod.chairPriority),
          )
        : null,
      h(
        'div',
        { class: 'row', style: 'margin-bottom:.6rem' },
        mine
          ? h('button', { type: 'button', id: 'my-hand', onclick: () => void cmd('lower_hand') }, mine.state === 'granted' ? S.mod.releaseFloor : S.delegate.lower)
          : h('button', { type: 'button', id: 'my-hand', onclick: () => void cmd('raise_hand', { list: 'main' }) }, isChair ? S.mod.takeFloor : S.delegate.raise),
      ),
      h('h3', {}, S.mod.holders),
      holders,
      f.pending.length ? [h('h3', {}, S.floor.pending), h('ol', { class: 'reqs', id: 'list-pending' }, pending)] : null,
      h('h3', {}, S.floor.queue),
      queueList(f.queue, 'queue'),
      h('h3', {}, S.floor.replies),
      queueList(f.replies, 'replies'),
    );
  }

  /** The participant whose removal waits for the chair's confirmation. @type {string | null} */
  let confirming = null;

  /** @param {string} id */
  const byId = (id) => document.getElementById(id);

  /** Shows the inline confirmation for removing `p` and puts the focus on its "yes". @param {Participant} p */
  function askRemove(p) {
    confirming = p.id;
    renderSide();
    byId(`remove-yes-${p.id}`)?.focus();
  }
  /** Closes the inline confirmation, the focus back on "Remove". @param {Participant} p */
  function keepParticipant(p) {
    confirming = null;
    renderSide();
    byId(`remove-${p.id}`)?.focus();
  }
  /**
   * @param {Participant} p
   * @param {boolean} [revoke] also revoke the invitation they joined with (their link stops working)
   */
  async function removeParticipant(p, revoke = false) {
    const ok = await cmd('remove', revoke ? { participant: p.id, revoke_invite: true } : { participant: p.id });
    confirming = null;
    keepFocus(partsPanel, renderSide);
    if (ok) {
      toast(S.mod.removed(p.name), 'info');
      announce(S.mod.removed(p.name));
    }
  }
  /** @param {Participant} p */
  async function askReconnect(p) {
    const ok = await cmd('ask_reconnect', { participant: p.id });
    if (ok) {
      toast(S.mod.askedReconnect(p.name), 'info');
      announce(S.mod.askedReconnect(p.name));
    }
  }

  /** @param {Participant} p */
  function nameOf(p) {
    return h('span', { class: 'pname' }, p.name, p.delegation ? h('span', { class: 'who-del' }, ` · ${p.delegation}`) : null, h('span', { class: 'tag' }, S.role[p.role]));
  }

  /** A connected participant, with the chair's actions. @param {Participant} p */
  function onlineRow(p) {
    const canFloor = isChair && (p.role === 'delegate' || p.role === 'moderator');
    /** @type {HTMLElement | null} */
    let actions = null;
    if (isChair && confirming === p.id) {
      actions = h(
        'div',
        { class: 'confirm-box', role: 'group', 'aria-labelledby': `remove-q-${p.id}`, id: `remove-confirm-${p.id}` },
        h('span', { id: `remove-q-${p.id}` }, S.mod.removeConfirm(p.name)),
        h('button', { type: 'button', class: 'small bad', id: `remove-yes-${p.id}`, 'data-act': 'remove-yes', onclick: () => void removeParticipant(p) }, S.mod.removeYes),
        h('button', { type: 'button', class: 'small bad', id: `remove-revoke-${p.id}`, 'data-act': 'remove-revoke', onclick: () => void removeParticipant(p, true) }, S.mod.removeRevoke),
        h('button', { type: 'button', class: 'small', id: `remove-no-${p.id}`, 'data-act': 'remove-no', onclick: () => keepParticipant(p) }, S.mod.removeNo),
      );
      actions.addEventListener('keydown', (ev) => {
        if (ev.key === 'Escape') {
          ev.preventDefault();
          keepParticipant(p);
        }
      });
    } else if (isChair) {
      actions = h(
        'span',
        { class: 'actions' },
        canFloor ? h('button', { type: 'button', class: 'small', id: `floor-${p.id}`, 'data-act': 'give-floor', onclick: () => void cmd('give_floor', { participant: p.id }) }, S.mod.giveFloor) : null,
        h('button', { type: 'button', class: 'small', id: `reconnect-${p.id}`, 'data-act': 'reconnect', 'aria-label': S.mod.askReconnectLabel(p.name), onclick: () => void askReconnect(p) }, S.mod.askReconnect),
        h('button', { type: 'button', class: 'small bad', id: `remove-${p.id}`, 'data-act': 'remove', 'aria-label': S.mod.removeLabel(p.name), onclick: () => askRemove(p) }, S.mod.remove),
      );
    }
    return h(
      'li',
      { 'data-participant': p.id, class: confirming === p.id ? 'confirming' : '' },
      h('div', { class: 'part-line' }, nameOf(p), h('span', { class: 'presence', 'data-p': p.presence }, S.mod.presence[p.presence])),
      actions,
    );
  }

  function renderSide() {
    const you = store.you;
    const others = [...store.participants.values()].filter((p) => p.id !== you?.id);
    const online = others.filter((p) => p.presence === 'joined');
    // Removed participants are gone from the console; the others who left are kept apart.
    const away = others.filter((p) => p.presence === 'left' || p.presence === 'connection_lost');
    if (confirming && !online.some((p) => p.id === confirming)) confirming = null;
    const awayBox = byId('part-away');
    const awayOpen = awayBox instanceof HTMLDetailsElement && awayBox.open;
    fill(
      partsPanel,
      h('h2', { id: 'participants-title' }, S.mod.participants),
      h('h3', {}, S.mod.connectedNow),
      online.length
        ? h('ul', { class: 'part-list', id: 'part-list', 'aria-labelledby': 'participants-title' }, online.map(onlineRow))
        : h('p', { class: 'empty', id: 'part-list' }, S.mod.nobodyConnected),
      away.length
        ? h(
            'details',
            { id: 'part-away', open: awayOpen },
            h('summary', {}, S.mod.notConnected(away.length)),
            h('ul', { class: 'part-list' }, away.map((p) => h('li', { 'data-participant': p.id }, h('div', { class: 'part-line' }, nameOf(p), h('span', { class: 'presence', 'data-p': p.presence }, S.mod.presence[p.presence]))))),
          )
        : null,
    );
    msgNow.textContent = store.timerMessage ? `“${store.timerMessage}”` : '';
  }

  function render() {
    const you = store.you;
    if (!you) return;
    isChair = you.role === 'moderator';
    document.title = `roundtable · ${isChair ? S.mod.title : S.mod.assistantTitle}`;
    fill(
      header,
      h('div', {}, h('div', { class: 'title' }, store.meeting?.title ?? ''), h('div', { class: 'sub' }, `${isChair ? S.mod.title : S.mod.assistantTitle} · ${you.name}`)),
    );
    keepFocus(agendaPanel, renderAgenda);
    keepFocus(floorPanel, renderFloor);
    keepFocus(partsPanel, renderSide);
    fillSettings();
  }

  let laidOut = false;
  function layout() {
    if (laidOut || !store.you) return;
    laidOut = true;
    isChair = store.you.role === 'moderator';
    fill(sidePanel, inRoomForm, isChair ? [settingsForm, msgForm, minutesPanel, shortcutsPanel] : null, partsPanel);
  }

  store.on('change', () => {
    layout();
    render();
  });

  // Clocks, several times a second.
  every(() => {
    const f = store.floor;
    if (!f) return;
    for (const r of f.holders) {
      const el = holderClocks.get(r.id);
      if (!el) continue;
      const c = countdownOf(store, r);
      if (c.deadline !== undefined) {
        const rem = conn.clock.remaining(c.deadline);
        const ph = phaseOf(rem, c.warning);
        el.textContent = `${fmtDuration(rem)} · ${S.phase[ph]}`;
        el.dataset.phase = ph;
      } else if (c.pausedRemaining !== undefined) {
        el.textContent = `${fmtDuration(c.pausedRemaining)} · ${S.phase.paused}`;
        el.dataset.phase = 'normal';
      } else {
        el.textContent = S.phase.none;
      }
    }
    const cur = store.currentItem();
    if (cur && itemClock) {
      const phaseEl = document.getElementById('item-phase');
      if (cur.deadline !== undefined) {
        const rem = conn.clock.remaining(cur.deadline);
        itemClock.textContent = fmtDuration(rem);
        itemClock.dataset.phase = rem < 0 ? 'overrun' : 'normal';
        if (phaseEl) phaseEl.textContent = rem < 0 ? S.phase.overrun : S.phase.normal;
      } else if (cur.remaining_ms !== undefined) {
        itemClock.textContent = fmtDuration(cur.remaining_ms);
        if (phaseEl) phaseEl.textContent = S.phase.paused;
      }
    }
  }, 250);

  // Keyboard shortcuts (not while typing).
  document.addEventListener('keydown', (ev) => {
    if (!isChair || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = /** @type {HTMLElement} */ (ev.target);
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    const k = ev.key.toLowerCase();
    const f = store.floor;
    const cur = store.currentItem();
    if (k === 'n') void cmd('next');
    else if (k === 'r') {
      const r = f?.holders.find((x) => !x.chair);
      if (r) void cmd('revoke', { request: r.id });
    } else if (k === 'e') void cmd('agenda_extend', { minutes: 1 });
    else if (k === 'p') void cmd(cur?.state === 'paused' ? 'agenda_resume' : 'agenda_pause');
    else if (k === 's') void startNext();
    else if (k === '?') $('shortcuts').scrollIntoView();
    else return;
    ev.preventDefault();
  });

  // ------------------------------------------------------------------ floor alerts
  /** @param {AlertInfo} a */
  const alertWho = (a) => (a.participant ? store.participantName(a.participant) : S.health.server);

  /** The floor alerts not yet acknowledged, newest first (at most five). */
  function renderFloorAlerts() {
    const list = [...store.alerts.values()]
      .filter((a) => a.floor && !a.acked_by)
      .sort((a, b) => b.raised_at - a.raised_at || b.id - a.id)
      .slice(0, 5);
    floorAlertsBox.classList.toggle('hidden', list.length === 0);
    fill(
      floorAlertsBox,
      list.length ? h('h2', { id: 'floor-alerts-title' }, S.mod.floorAlerts) : null,
      list.map((a) => {
        const kind = S.health.kind[a.kind] ?? a.kind;
        const name = alertWho(a);
        const open = a.cleared_at === undefined;
        return h(
          'div',
          { class: 'floor-alert', id: `floor-alert-${a.id}`, 'data-alert': a.id, 'data-kind': a.kind, 'data-open': String(open), role: 'group', 'aria-labelledby': `floor-alert-kind-${a.id}` },
          h('span', { class: 'fa-kind', id: `floor-alert-kind-${a.id}` }, `⚠ ${kind}`),
          h('span', { class: 'fa-text' }, h('strong', {}, name), a.detail ? ` · ${a.detail}` : ''),
          h('span', { class: 'fa-time' }, `${fmtTime(a.raised_at)}${open ? '' : ` · ${S.mod.floorAlertEnded(fmtTime(a.cleared_at))}`}`),
          h('button', { type: 'button', class: 'small', id: `floor-ack-${a.id}`, 'data-act': 'ack-alert', 'aria-label': S.mod.floorAlertLabel(kind, name), onclick: () => void ackFloorAlert(a) }, S.mod.floorAlertAck),
        );
      }),
    );
  }

  /** @param {AlertInfo} a */
  async function ackFloorAlert(a) {
    const ok = await cmd('ack_alert', { alert: a.id });
    if (!ok) return;
    // The server's `alert` update removes it; should it be late, do not wait for it.
    const now = store.alerts.get(a.id);
    if (now && !now.acked_by) store.alerts.set(a.id, { ...now, acked_by: store.you?.id ?? '', acked_at: conn.clock.now() });
    renderFloorAlerts();
    const next = floorAlertsBox.querySelector('button[data-act="ack-alert"]') ?? document.getElementById('next-speaker');
    if (next instanceof HTMLElement) next.focus();
  }

  conn.on('alert', (a, isNew) => {
    if (!a.floor) return;
    if (isNew && a.cleared_at === undefined && !a.acked_by) announce(`${S.health.kind[a.kind] ?? a.kind}: ${alertWho(a)}. ${a.detail}`);
    keepFocus(floorAlertsBox, renderFloorAlerts);
  });

  Object.assign(/** @type {any} */ (window).__rt, { cmd });
  void toast;
}
