// @ts-check
/**
 * The remote delegate's page: device check (microphone, camera, preview, level meter), then
 * the meeting: the room's program large, the floor holder beside it, asking for the floor with
 * the place in line, the open microphone with its countdown, leave.
 *
 * The websocket opens and the room is received from the start, so the room is already
 * playing when the delegate clicks "Join" (which only adds the publish connection).
 */

import { MediaSession, sampleStats, standing, countdownOf } from './protocol.js';
import { S, ordinal } from './strings.js';
import { h, fill, $, boot, toast, announce, announceQueue, fmtDuration, phaseOf, every, playAudio, who } from './ui.js';

/** @typedef {import('./protocol.js').ReceivedTrack} ReceivedTrack */

const app = $('app');
const conn = (() => {
  try {
    return boot();
  } catch {
    return null;
  }
})();

/** The local stream from the device check. @type {MediaStream | null} */
let local = null;
let joined = false;
let selfMuted = false;
/** Received tracks by mid. @type {Map<string, ReceivedTrack>} */
const received = new Map();
const audioHost = h('div', { class: 'hidden', id: 'audio-host' });
document.body.append(audioHost);

if (conn) start(conn);

/** @param {import('./protocol.js').Connection} conn */
function start(conn) {
  conn.mark('page_start');
  const store = conn.store;
  announceQueue(store);

  const media = new MediaSession(conn, {
    subscribe: true,
    tracks: async () => {
      if (!joined) return [];
      // A fresh start (the chair asked us to reconnect) with a device that went away: open again.
      if (!local || local.getTracks().some((t) => t.readyState === 'ended')) await openDevices();
      if (!local) return [];
      /** @type {import('./protocol.js').PublishTrackSpec[]} */
      const specs = [];
      const a = local.getAudioTracks()[0];
      const v = local.getVideoTracks()[0];
      if (a) specs.push({ track: a, source: 'microphone' });
      if (v) specs.push({ track: v, source: 'camera', simulcast: true });
      return specs;
    },
  });
  media.on('track', (t) => {
    received.set(t.mid, t);
    if (t.track.kind === 'audio') playAudio(t.track, audioHost);
    renderVideos();
  });
  media.on('slots', () => renderVideos());
  media.on('state', (s, why) => {
    mediaLine.dataset.state = s;
    mediaLine.textContent = s === 'connected' ? S.media.connected : s === 'failed' ? S.media.failedBecause(why) : s === 'connecting' ? S.media.connecting : s === 'reconnecting' ? S.media.reconnecting : '';
  });
  // A media failure rejoins after a pause (the room program is the point of this page).
  media.on('failed', () => setTimeout(() => conn.restart('media failed'), 2000));

  // ------------------------------------------------------------------ device check
  const micSel = h('select', { id: 'mic-select', 'aria-describedby': 'check-intro' });
  const camSel = h('select', { id: 'cam-select' });
  const preview = h('video', { id: 'preview', autoplay: true, muted: true, playsinline: true, 'aria-label': S.delegate.preview });
  preview.muted = true;
  const meterBar = h('div', {});
  const meter = h('div', { class: 'meter', role: 'meter', 'aria-label': S.delegate.level, 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }, meterBar);
  const joinBtn = h('button', { class: 'primary big', id: 'join', type: 'button' }, S.delegate.join);
  const lobbyRoom = h('div', { class: 'video-box' });
  const checkErr = h('p', { class: 'hidden', role: 'alert' });
  const lobby = h(
    'section',
    { class: 'check panel', id: 'lobby', 'aria-labelledby': 'check-title' },
    h('h1', { id: 'check-title' }, S.delegate.checkTitle),
    h('p', { id: 'check-intro', class: 'muted' }, S.delegate.checkIntro),
    h(
      'div',
      { class: 'check-grid' },
      h(
        'div',
        {},
        h('label', { for: 'mic-select' }, S.delegate.mic),
        micSel,
        h('label', { id: 'level-label' }, S.delegate.level),
        meter,
        h('label', { for: 'cam-select' }, S.delegate.camera),
        camSel,
        checkErr,
        h('div', { class: 'row', style: 'margin-top:1rem' }, joinBtn),
      ),
      h('div', {}, h('div', { class: 'video-box' }, preview, h('span', { class: 'video-label' }, S.delegate.preview)), h('p', { class: 'muted' }, S.delegate.lobbyNote), lobbyRoom),
    ),
  );

  // ------------------------------------------------------------------ meeting
  const header = h('header', { class: 'top' });
  const programBox = h('div', { class: 'video-box', id: 'program-box' });
  const speakerBox = h('div', { class: 'video-box hidden', id: 'speaker-box' });
  const statusCard = h('section', { class: 'status-card', id: 'standing', 'aria-live': 'polite', 'data-standing': 'none' });
  const bigState = h('div', { class: 'big-state', id: 'standing-text' });
  const subState = h('div', { class: 'sub-state', id: 'standing-sub' });
  const micState = h('p', { class: 'mic-state', id: 'mic-state' });
  const countdown = h('div', { class: 'countdown hidden', id: 'countdown', 'data-phase': 'normal' });
  const phaseLabel = h('div', { class: 'phase-label hidden', id: 'phase-label' });
  const raiseBtn = h('button', { class: 'primary big', id: 'raise', type: 'button' }, S.delegate.raise);
  const replyBtn = h('button', { class: 'big', id: 'raise-reply', type: 'button' }, S.delegate.raiseReply);
  const muteBtn = h('button', { class: 'hidden', id: 'mute-self', type: 'button' }, S.delegate.muteSelf);
  const leaveBtn = h('button', { class: 'bad', id: 'leave', type: 'button' }, S.delegate.leave);
  fill(statusCard, bigState, subState, countdown, phaseLabel, micState, h('div', { class: 'row' }, raiseBtn, replyBtn, muteBtn));
  const itemLine = h('section', { class: 'panel', id: 'item' });
  const queueEl = h('section', { class: 'panel', id: 'queue', 'aria-labelledby': 'queue-title' });
  const mediaLine = h('p', { class: 'muted', id: 'media-state' });
  const meeting = h(
    'div',
    { id: 'meeting', class: 'hidden' },
    header,
    h(
      'main',
      {},
      h(
        'div',
        { class: 'd-layout' },
        h('div', { class: 'd-videos stack' }, programBox, speakerBox, mediaLine),
        h('div', { class: 'd-side' }, statusCard, itemLine, queueEl, h('p', { class: 'muted small' }, S.delegate.shortcuts), h('div', { class: 'row' }, leaveBtn)),
      ),
    ),
  );
  fill(app, lobby, meeting);

  // ------------------------------------------------------------------ devices
  /** @type {AudioContext | null} */
  let audioCtx = null;
  /** @type {(() => void) | null} */
  let stopMeter = null;

  async function listDevices() {
    const devs = await navigator.mediaDevices.enumerateDevices();
    const mics = devs.filter((d) => d.kind === 'audioinput');
    const cams = devs.filter((d) => d.kind === 'videoinput');
    const micNow = local?.getAudioTracks()[0]?.getSettings().deviceId;
    const camNow = local?.getVideoTracks()[0]?.getSettings().deviceId;
    fill(micSel, mics.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === micNow }, d.label || `${S.delegate.mic} ${i + 1}`)));
    fill(
      camSel,
      cams.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === camNow }, d.label || `${S.delegate.camera} ${i + 1}`)),
      h('option', { value: '', selected: !!local && !camNow }, S.delegate.noCamera),
    );
  }

  async function openDevices() {
    checkErr.classList.add('hidden');
    for (const t of local?.getTracks() ?? []) t.stop();
    local = null;
    const micId = micSel.value;
    const camId = camSel.value;
    const wantCam = camSel.options.length === 0 || camId !== '';
    try {
      local = await navigator.mediaDevices.getUserMedia({
        audio: micId ? { deviceId: { exact: micId }, echoCancellation: true, noiseSuppression: true } : { echoCancellation: true, noiseSuppression: true },
        video: wantCam ? { ...(camId ? { deviceId: { exact: camId } } : {}), width: { ideal: 1280 }, height: { ideal: 720 } } : false,
      });
    } catch (e) {
      try {
        local = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      } catch {
        checkErr.textContent = S.delegate.deviceError;
        checkErr.classList.remove('hidden');
        checkErr.append(' ', h('button', { type: 'button', onclick: () => void openDevices() }, S.delegate.retryDevices));
        void e;
        return;
      }
    }
    preview.srcObject = local;
    await listDevices();
    startMeter();
  }

  function startMeter() {
    stopMeter?.();
    const track = local?.getAudioTracks()[0];
    if (!track) return;
    audioCtx = audioCtx ?? new AudioContext();
    const src = audioCtx.createMediaStreamSource(new MediaStream([track]));
    const an = audioCtx.createAnalyser();
    an.fftSize = 512;
    src.connect(an);
    const buf = new Float32Array(an.fftSize);
    const stop = every(() => {
      if (audioCtx?.state === 'suspended') void audioCtx.resume().catch(() => {});
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      const rms = Math.sqrt(sum / buf.length);
      const level = Math.min(100, Math.round(Math.max(0, 20 * Math.log10(rms + 1e-9) + 60) * (100 / 60)));
      meterBar.style.width = `${level}%`;
      meter.setAttribute('aria-valuenow', String(level));
    }, 100);
    stopMeter = () => {
      stop();
      src.disconnect();
    };
  }

  micSel.addEventListener('change', () => void openDevices());
  // Removed by the chair, or the link refused: the page says so (ui.js) and the camera and
  // microphone go off.
  conn.on('state', (s, why) => {
    if (s !== 'closed' || (why !== 'removed' && why !== 'refused')) return;
    media.close();
    stopMeter?.();
    for (const t of local?.getTracks() ?? []) t.stop();
    joined = false;
    try {
      sessionStorage.removeItem(joinedKey);
    } catch {
      /* nothing remembered */
    }
  });
  camSel.addEventListener('change', () => void openDevices());

  const joinedKey = `roundtable-joined:${conn.token.slice(-24)}`;
  joinBtn.addEventListener('click', async () => {
    try {
      sessionStorage.setItem(joinedKey, JSON.stringify({ mic: micSel.value, cam: camSel.value }));
    } catch {
      /* private mode: a reload shows the device check again */
    }
    joinBtn.disabled = true;
    joinBtn.textContent = S.delegate.joining;
    joined = true;
    lobby.classList.add('hidden');
    meeting.classList.remove('hidden');
    stopMeter?.();
    renderVideos();
    applyMic();
    await media.publishNow();
    raiseBtn.focus();
  });

  // A reload after joining (same tab) goes straight back in, with the same devices.
  /** @type {{mic?: string, cam?: string} | null} */
  let remembered = null;
  try {
    remembered = JSON.parse(sessionStorage.getItem(joinedKey) ?? 'null');
  } catch {
    remembered = null;
  }
  void (async () => {
    // The room first: the camera, the microphone and the level meter start once the room's
    // picture is decoded (or after 2 s), so they do not compete with joining (measured:
    // tests/e2e/README.md, join time).
    await new Promise((resolve) => {
      const off = media.on('first_frame', () => resolve(undefined));
      setTimeout(() => {
        off();
        resolve(undefined);
      }, 2000);
    });
    if (remembered) {
      // Select the remembered devices (the options exist once permission is granted).
      await openDevices();
      if (remembered.mic && [...micSel.options].some((o) => o.value === remembered?.mic)) micSel.value = remembered.mic;
      if (remembered.cam !== undefined && [...camSel.options].some((o) => o.value === remembered?.cam)) camSel.value = remembered.cam;
      if (local?.getAudioTracks()[0]?.getSettings().deviceId !== micSel.value || (local?.getVideoTracks()[0]?.getSettings().deviceId ?? '') !== camSel.value) {
        await openDevices();
      }
      joinBtn.click();
    } else {
      await openDevices();
    }
  })();

  // ------------------------------------------------------------------ floor actions
  raiseBtn.addEventListener('click', () => {
    const st = standing(store);
    if (st.state === 'none') void conn.send('raise_hand', { list: 'main' }).catch(() => {});
    else void conn.send('lower_hand').catch(() => {});
  });
  replyBtn.addEventListener('click', () => void conn.send('raise_hand', { list: 'reply' }).catch(() => {}));
  muteBtn.addEventListener('click', () => {
    selfMuted = !selfMuted;
    applyMic();
    render();
  });
  leaveBtn.addEventListener('click', () => {
    try {
      sessionStorage.removeItem(joinedKey);
    } catch {
      /* nothing remembered */
    }
    media.close();
    void conn.leave();
    for (const t of local?.getTracks() ?? []) t.stop();
    fill(app, h('section', { class: 'check panel' }, h('h1', {}, S.conn.left), h('button', { class: 'primary big', type: 'button', onclick: () => location.reload() }, S.conn.rejoin)));
  });
  document.addEventListener('keydown', (ev) => {
    if (!joined || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = /** @type {HTMLElement} */ (ev.target);
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if (ev.key === 'h' || ev.key === 'H') {
      raiseBtn.click();
      ev.preventDefault();
    } else if ((ev.key === 'm' || ev.key === 'M') && !muteBtn.classList.contains('hidden')) {
      muteBtn.click();
      ev.preventDefault();
    }
  });

  /** Whether the server lets this delegate's audio through now. */
  function micOpen() {
    const f = store.floor;
    if (!f) return false;
    return f.policy === 'open' || standing(store).state === 'granted';
  }

  /** The microphone track sends sound only while the floor is ours (the server gates too). */
  function applyMic() {
    const a = local?.getAudioTracks()[0];
    if (a) a.enabled = joined && micOpen() && !selfMuted;
  }

  // ------------------------------------------------------------------ rendering
  let lastStanding = '';
  function render() {
    const you = store.you;
    const f = store.floor;
    if (!you || !f) return;
    fill(
      header,
      h('div', {}, h('div', { class: 'title' }, store.meeting?.title ?? ''), h('div', { class: 'sub' }, `${you.name}${you.delegation ? ' · ' + you.delegation : ''} · ${S.role.delegate}`)),
    );
    const st = standing(store);
    /** @type {string} */
    let key = st.state;
    raiseBtn.disabled = false;
    replyBtn.classList.toggle('hidden', st.state !== 'none');
    if (st.state === 'granted') {
      bigState.textContent = S.delegate.youHaveFloor;
      subState.textContent = selfMuted ? S.delegate.selfMuted : S.delegate.micOpen;
      raiseBtn.textContent = S.delegate.giveBack;
    } else if (st.state === 'queued') {
      const first = st.position === 1 && (st.list === 'reply' || f.replies.length === 0);
      key = first ? 'next' : 'queued';
      bigState.textContent = first ? S.delegate.youAreNext : st.list === 'reply' ? S.delegate.inReplyLine(st.position) : S.delegate.inLine(st.position);
      subState.textContent = first ? (st.list === 'reply' ? S.delegate.inReplyLine(st.position) : S.delegate.inLine(st.position)) : '';
      raiseBtn.textContent = S.delegate.lower;
    } else if (st.state === 'pending') {
      bigState.textContent = S.delegate.pendingAccept;
      subState.textContent = '';
      raiseBtn.textContent = S.delegate.lower;
    } else {
      bigState.textContent = f.policy === 'open' ? S.delegate.openFloor : S.delegate.mutedByModerator;
      subState.textContent = f.policy === 'open' ? '' : S.delegate.mutedHelp;
      raiseBtn.textContent = S.delegate.raise;
      if (f.policy === 'moderated') key = 'muted';
    }
    statusCard.dataset.standing = key;
    micState.textContent = st.state === 'granted' || f.policy === 'open' ? '' : st.state === 'none' ? '' : S.delegate.mutedByModerator;
    muteBtn.classList.toggle('hidden', !micOpen());
    muteBtn.textContent = selfMuted ? S.delegate.unmuteSelf : S.delegate.muteSelf;
    muteBtn.setAttribute('aria-pressed', String(selfMuted));
    const summary = `${st.state}:${st.state === 'queued' ? st.position : ''}`;
    if (summary !== lastStanding) {
      if (st.state === 'granted') announce(S.delegate.youHaveFloor);
      else if (st.state === 'queued') announce(bigState.textContent ?? '');
      lastStanding = summary;
    }
    applyMic();

    // Current item
    const item = store.currentItem();
    fill(itemLine, h('h3', {}, S.agenda.title), item ? h('p', {}, h('strong', {}, item.title), ` (${S.agenda.state[item.state]})`) : h('p', { class: 'muted' }, S.agenda.noItem));

    // The lists
    const rows = (/** @type {import('./protocol.js').RequestInfo[]} */ list, /** @type {boolean} */ numbered) =>
      list.length
        ? h(
            'ol',
            { class: 'reqs' },
            list.map((r) => h('li', { class: r.beneficiary.participant === you.id ? 'me' : '' }, numbered ? h('span', { class: 'pos' }, ordinal(r.position ?? 0)) : h('span', { class: 'pos' }, '◉'), who(r))),
          )
        : h('p', { class: 'empty' }, S.floor.emptyQueue);
    fill(
      queueEl,
      h('h2', { id: 'queue-title' }, S.floor.queue),
      h('h3', {}, S.floor.speakingNow),
      f.holders.length ? rows(f.holders, false) : h('p', { class: 'empty' }, S.floor.nobodySpeaking),
      h('h3', {}, S.floor.queue),
      rows(f.queue, true),
      f.replies.length ? [h('h3', {}, S.floor.replies), rows(f.replies, true)] : null,
    );
    renderVideos();
  }

  /** The remote holder shown in the speaker slot (a holder with a device, not us). */
  function remoteHolder() {
    const f = store.floor;
    if (!f) return null;
    return f.holders.find((r) => !r.beneficiary.in_room && r.beneficiary.participant !== store.you?.id && !r.chair) ?? null;
  }

  /** @type {Map<string, HTMLVideoElement>} */
  const videos = new Map();
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

  function renderVideos() {
    /** @type {ReceivedTrack | undefined} */
    let program;
    /** @type {ReceivedTrack | undefined} */
    let speaker;
    for (const t of received.values()) {
      if (t.track.kind !== 'video') continue;
      if (t.slot.slot === 'track' && t.slot.source === 'program') program = t;
      if (t.slot.slot === 'speaker') speaker = t;
    }
    const target = joined ? programBox : lobbyRoom;
    if (program) {
      const v = videoFor(program);
      if (v.parentElement !== target) fill(target, v, h('span', { class: 'video-label' }, S.delegate.roomVideo));
    } else if (!target.firstChild) {
      fill(target, h('div', { class: 'placeholder' }, S.media.connecting));
    }
    const holder = remoteHolder();
    if (speaker && holder && joined) {
      const v = videoFor(speaker);
      if (v.parentElement !== speakerBox) fill(speakerBox, v, h('span', { class: 'video-label', id: 'speaker-label' }, ''));
      const label = speakerBox.querySelector('.video-label');
      if (label) label.textContent = `${S.delegate.speakerVideo}: ${holder.beneficiary.name}`;
      speakerBox.classList.remove('hidden');
    } else {
      speakerBox.classList.add('hidden');
    }
  }

  // Countdown, several times a second, from the absolute deadline and the clock offset.
  /** @type {{deadline?: number, remaining?: number, text?: string, phase?: string}} */
  let lastCountdown = {};
  every(() => {
    const st = standing(store);
    if (st.state !== 'granted') {
      countdown.classList.add('hidden');
      phaseLabel.classList.add('hidden');
      lastCountdown = {};
      return;
    }
    const c = countdownOf(store, st.request);
    let remaining;
    if (c.deadline !== undefined) remaining = conn.clock.remaining(c.deadline);
    else if (c.pausedRemaining !== undefined) remaining = c.pausedRemaining;
    if (remaining === undefined) {
      countdown.classList.add('hidden');
      phaseLabel.classList.remove('hidden');
      phaseLabel.textContent = S.phase.none;
      lastCountdown = {};
      return;
    }
    const phase = c.deadline === undefined ? 'normal' : phaseOf(remaining, c.warning);
    countdown.classList.remove('hidden');
    phaseLabel.classList.remove('hidden');
    countdown.textContent = fmtDuration(remaining);
    countdown.dataset.phase = phase;
    phaseLabel.dataset.phase = phase;
    statusCard.classList.add('phase-box');
    statusCard.dataset.phase = phase;
    phaseLabel.textContent = c.deadline === undefined ? S.phase.paused : S.phase[phase];
    lastCountdown = { deadline: c.deadline, remaining, text: countdown.textContent, phase };
  }, 100);

  store.on('change', render);
  // Every join (welcome or resumed) restarts media afresh: forget the old connection's tracks.
  conn.on('joined', () => {
    received.clear();
    videos.clear();
    audioHost.replaceChildren();
  });
  conn.on('welcome', render);

  // Test hook.
  Object.assign(/** @type {any} */ (window).__rt, {
    media,
    stats: () => sampleStats(media),
    countdown: () => {
      // Computed now (not the last painted value), plus what the page shows.
      const st = standing(store);
      const c = st.state === 'granted' ? countdownOf(store, st.request) : {};
      return {
        ...lastCountdown,
        deadline: c.deadline,
        remaining: c.deadline !== undefined ? conn.clock.remaining(c.deadline) : undefined,
        wall: Date.now(),
        offset: conn.clock.offset,
        rtt: conn.clock.rtt,
      };
    },
    join: () => joinBtn.click(),
    devices: () => (local?.getTracks() ?? []).map((t) => t.readyState),
  });
  void toast;
  conn.mark('page_ready');
}
