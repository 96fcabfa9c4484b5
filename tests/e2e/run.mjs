// Browser tests of the web clients: real Chromium (playwright-core), the real server binary.
//
//   ROUNDTABLE_BIN=target/release/roundtable node tests/e2e/run.mjs
//
// Prints PASS/FAIL per named test and a closing "N passed, N failed" line; exits 1 on any
// failure. Artifacts (screenshots, join-time.json, server.log) go to target/e2e-artifacts/.
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch, until, ARTIFACTS, BIN } from './lib.mjs';

if (!existsSync(BIN)) {
  console.error(`no server binary at ${BIN} (set ROUNDTABLE_BIN)`);
  process.exit(2);
}
mkdirSync(ARTIFACTS, { recursive: true });

const MEETINGS = `
[[meeting]]
id = "dlg"
title = "E2E roundtable: interactive dialogue"
venue = "Loopback hall"
[meeting.floor]
policy = "moderated"
max_speakers = 1
speaking_limit_secs = 120
warning_secs = 20
item_warning_secs = 60
[[meeting.agenda]]
id = "dialogue"
kind = "dialogue"
title = "Interactive dialogue among participants"
minutes = 30
intervention_secs = 120

[[meeting]]
id = "slots"
title = "E2E roundtable: presentation slots"
[meeting.floor]
item_warning_secs = 57
[[meeting.agenda]]
id = "slot-a"
kind = "presentation"
title = "Circular economy in mining"
minutes = 1
[[meeting.agenda.presenters]]
name = "Mr. Alan Young"
organisation = "MERG"
[[meeting.agenda]]
id = "slot-b"
kind = "presentation"
title = "Critical minerals and just transition"
minutes = 1
[[meeting.agenda.presenters]]
name = "Mr. Hari Tulsidas"
organisation = "UNECE"
`;

const results = [];
/** Runs one named test; never throws. */
async function test(name, fn) {
  const t0 = Date.now();
  try {
    const note = await fn();
    const ms = Date.now() - t0;
    results.push({ name, ok: true, ms, note });
    console.log(`PASS ${name} (${ms} ms)${note ? ` — ${note}` : ''}`);
  } catch (e) {
    const ms = Date.now() - t0;
    results.push({ name, ok: false, ms, error: String(e?.stack ?? e) });
    console.log(`FAIL ${name} (${ms} ms): ${e?.message ?? e}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const srv = await startServer(MEETINGS, { debug: !!process.env.E2E_DEBUG });
const browser = await launch();
/** Every page opened, for screenshots and console capture. */
const consoleLog = [];

async function open(url, label, opts = {}) {
  const ctx = await browser.newContext({ viewport: opts.viewport ?? { width: 1280, height: 800 }, deviceScaleFactor: 1, acceptDownloads: true });
  const page = await ctx.newPage();
  page.on('console', (m) => consoleLog.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLog.push(`[${label}] pageerror: ${e.message}`));
  await page.goto(url);
  return { ctx, page };
}

/** Inbound stats of a page, with slot info. */
const stats = (page) => page.evaluate(() => (window.__rt?.stats ? window.__rt.stats() : { inbound: [], outbound: [] }));

function programVideo(s) {
  return s.inbound.find((x) => x.kind === 'video' && x.slot?.slot === 'track' && x.slot.source === 'program');
}
function audioOf(s, participant) {
  return s.inbound.find((x) => x.kind === 'audio' && x.slot?.slot === 'track' && x.slot.participant === participant);
}
async function joinDelegate(page) {
  await page.waitForSelector('#join');
  await until('device check ready', () => page.evaluate(() => !!document.querySelector('#preview')?.srcObject), 10000);
  await page.click('#join');
  await page.waitForSelector('#meeting:not(.hidden)');
}
async function standingText(page) {
  return page.evaluate(() => document.getElementById('standing')?.innerText ?? '');
}

let room, mod, delA, delB, timerPage, modSlots;
const idA = 'delegate-1';
const nameA = 'Amina Karimova';
const nameB = 'Emre Yıldız';
const urlB = srv.invite('delegate', nameB, 'Republic of Türkiye', 'dlg', 'emre-yildiz');
const idB = 'emre-yildiz';

try {
  // ------------------------------------------------------------------------ set-up
  room = await open(srv.links.dlg.room, 'room');
  mod = await open(srv.links.dlg.moderator, 'moderator', { viewport: { width: 1440, height: 1000 } });
  delA = await open(srv.links.dlg.delegate, 'delegateA');
  delB = await open(urlB, 'delegateB');
  await Promise.all([joinDelegate(delA.page), joinDelegate(delB.page)]);
  await mod.page.waitForSelector('#current-item');

  // Test 3 runs beside the others (a 1-minute slot must reach its overrun).
  modSlots = await open(srv.links.slots.moderator, 'moderator-slots', { viewport: { width: 1440, height: 1000 } });
  timerPage = await open(srv.links.slots.timer, 'timer', { viewport: { width: 1280, height: 720 } });
  const slotTest = (async () => {
    const steps = [];
    const timer = () => timerPage.page.evaluate(() => window.__rt.timer ?? {});
    await modSlots.page.waitForSelector('#ag-start');
    await modSlots.page.click('#ag-start');
    const t0 = Date.now();
    let t = await until('slot A on the timer', async () => {
      const x = await timer();
      return x.who?.includes('Alan Young') && x.remaining !== undefined && x;
    }, 10000);
    steps.push(`started (${t.text})`);
    t = await until('wrap-up phase on the timer', async () => {
      const x = await timer();
      return x.phase === 'wrapup' && x;
    }, 15000);
    const shown = await timerPage.page.innerText('#timer-phase');
    assert(/wrap up/i.test(shown), `phase label shows "${shown}"`);
    steps.push(`wrap-up at ${Math.round((Date.now() - t0) / 1000)} s (${t.text}, "${shown}")`);
    await timerPage.page.screenshot({ path: join(ARTIFACTS, 'timer-wrapup.png') });
    // A timer screen opened during the wrap-up shows it at once (the agenda's `warning_ms`),
    // although it never saw the `item_warning` event.
    const late = await open(srv.links.slots.timer, 'timer-late', { viewport: { width: 1280, height: 720 } });
    const lateT = await until('a timer opened late shows the wrap-up', async () => {
      const x = await late.page.evaluate(() => window.__rt.timer ?? {});
      return x.remaining !== undefined && x;
    }, 10000);
    assert(lateT.phase === 'wrapup', `a timer opened during the wrap-up shows "${lateT.phase}" (${lateT.text})`);
    await late.ctx.close();
    steps.push(`a timer opened late: ${lateT.phase}`);
    // The chair's message reaches the lectern.
    await modSlots.page.fill('#timer-text', 'Please conclude');
    await modSlots.page.click('#timer-send');
    await until('timer message on the timer', async () => (await timer()).message === 'Please conclude', 5000);
    t = await until('danger phase', async () => {
      const x = await timer();
      return x.phase === 'danger' && x;
    }, 60000);
    steps.push(`danger (${t.text})`);
    t = await until('overrun counting up', async () => {
      const x = await timer();
      return x.phase === 'overrun' && /^\+0:0[1-9]/.test(x.text) && x;
    }, 20000);
    const overrunLabel = await timerPage.page.innerText('#timer-phase');
    assert(/over time/i.test(overrunLabel), `overrun label "${overrunLabel}"`);
    steps.push(`overrun ${t.text} ("${overrunLabel}")`);
    await timerPage.page.screenshot({ path: join(ARTIFACTS, 'timer-overrun.png') });
    await modSlots.page.click('#ag-next');
    t = await until('slot B starts on the timer', async () => {
      const x = await timer();
      return x.who?.includes('Hari Tulsidas') && x.phase !== 'overrun' && x.remaining > 50000 && x;
    }, 10000);
    steps.push(`next slot: ${t.who} ${t.text}`);
    const items = await modSlots.page.evaluate(() => window.__rt.store.agenda.items.map((i) => `${i.id}:${i.state}${i.overrun_ms ? `+${i.overrun_ms}` : ''}`));
    assert(items[0].startsWith('slot-a:ended+'), `slot A ended with an overrun: ${items}`);
    steps.push(items.join(' '));
    return steps.join('; ');
  })();
  slotTest.catch(() => {});

  // ------------------------------------------------------------------------ 1
  await test('1. room video reaches both delegates; delegate audio gated at the room', async () => {
    const notes = [];
    for (const [label, d] of [['A', delA], ['B', delB]]) {
      const v = await until(`delegate ${label} decodes room video`, async () => {
        const p = programVideo(await stats(d.page));
        return p && p.framesDecoded > 0 && p;
      }, 20000);
      notes.push(`${label}: ${v.framesDecoded} frames ${v.frameHeight}p`);
    }
    // The room has a subscription for each delegate's microphone, and receives nothing on it.
    const s = await until('room offered both delegates\' microphones', async () => {
      const x = await stats(room.page);
      const subs = await room.page.evaluate(() => [...window.__rt.media.subscriber.slots.values()]);
      const hasA = subs.some((sl) => sl.slot === 'track' && sl.participant === 'delegate-1' && sl.kind === 'audio');
      const hasB = subs.some((sl) => sl.slot === 'track' && sl.participant === 'emre-yildiz' && sl.kind === 'audio');
      return hasA && hasB && x;
    }, 15000);
    await sleep(1500);
    const s2 = await stats(room.page);
    for (const id of [idA, idB]) {
      const a = audioOf(s2, id);
      const bytes = a?.bytesReceived ?? 0;
      assert(bytes === 0, `room received ${bytes} audio bytes from ${id} without the floor`);
    }
    // The delegates do send (the gate is at the server).
    const outA = await stats(delA.page);
    notes.push(`room audio from A/B before grant: ${audioOf(s2, idA)?.bytesReceived ?? 0}/${audioOf(s2, idB)?.bytesReceived ?? 0} bytes`);
    notes.push(`A sends ${outA.outbound.map((o) => `${o.kind}${o.rid ? ':' + o.rid : ''}=${o.bytesSent}`).join(' ')}`);
    void s;
    return notes.join('; ');
  });

  // ------------------------------------------------------------------------ 2
  await test('2. hand, grant, audio reaches the room, countdown matches the deadline, revoke stops it', async () => {
    const notes = [];
    await delA.page.click('#raise');
    await until('delegate A sees "1st in line"', async () => /1st in line/.test(await standingText(delA.page)), 5000);
    const row = await mod.page.waitForSelector(`#list-queue li[data-request] >> text=${nameA}`);
    void row;
    await mod.page.click(`#list-queue li:has-text("${nameA}") [data-act=grant]`);
    await until('delegate A has the floor', async () => /You have the floor/.test(await standingText(delA.page)), 5000);
    const a0 = audioOf(await stats(room.page), idA)?.bytesReceived ?? 0;
    await sleep(1500);
    const a1 = await until('room audio bytes from A grow', async () => {
      const b = audioOf(await stats(room.page), idA)?.bytesReceived ?? 0;
      return b > a0 + 1000 && b;
    }, 8000);
    notes.push(`room audio from A: ${a0} → ${a1} bytes`);
    // B stays gated.
    const b1 = audioOf(await stats(room.page), idB)?.bytesReceived ?? 0;
    assert(b1 === 0, `B's audio leaked to the room (${b1} bytes)`);
    // Countdown vs the server's deadline (same machine: the page's wall clock is the server's).
    const deadline = await mod.page.evaluate(() => window.__rt.store.floor.holders[0]?.deadline);
    assert(typeof deadline === 'number', 'the holder has a deadline');
    const c = await delA.page.evaluate(() => window.__rt.countdown());
    assert(c.deadline === deadline, `delegate's deadline ${c.deadline} = server's ${deadline}`);
    const truth = deadline - c.wall;
    const err = Math.abs(c.remaining - truth);
    assert(err <= 250, `countdown off by ${err.toFixed(0)} ms`);
    const shown = await delA.page.innerText('#countdown');
    const secs = (s) => s.split(':').reduce((a, x) => a * 60 + Number(x), 0);
    assert(Math.abs(secs(shown) - truth / 1000) <= 1.2, `shown "${shown}" vs ${(truth / 1000).toFixed(1)} s`);
    notes.push(`countdown error ${err.toFixed(1)} ms (offset ${c.offset.toFixed(1)} ms, rtt ${c.rtt} ms), shows ${shown}`);
    await delA.page.screenshot({ path: join(ARTIFACTS, 'delegate-floor.png') });
    await room.page.screenshot({ path: join(ARTIFACTS, 'room-speaking.png') });
    // Revoke.
    await mod.page.click(`.holder:has-text("${nameA}") [data-act=revoke]`);
    await until('delegate A muted by the moderator', async () => /Muted by the moderator/.test(await standingText(delA.page)), 5000);
    await sleep(700);
    const r0 = audioOf(await stats(room.page), idA)?.bytesReceived ?? 0;
    await sleep(1500);
    const r1 = audioOf(await stats(room.page), idA)?.bytesReceived ?? 0;
    assert(r1 - r0 <= 200, `room still receives A's audio after revoke (${r0} → ${r1})`);
    notes.push(`after revoke ${r0} → ${r1} bytes in 1.5 s`);
    return notes.join('; ');
  });

  // ------------------------------------------------------------------------ 8
  await test('8. a delegate\'s moderator command is refused and the page shows the error', async () => {
    const code = await delA.page.evaluate(() => window.__rt.conn.send('agenda_end').then(() => 'acked', (e) => e.code));
    assert(code === 'forbidden', `server answered ${code}`);
    const text = await until('the error toast', async () => {
      const t = await delA.page.evaluate(() => document.querySelector('.toast-error')?.textContent ?? '');
      return /forbidden/.test(t) && t;
    }, 3000);
    await delA.page.screenshot({ path: join(ARTIFACTS, 'delegate-error.png') });
    return `toast: ${text.trim()}`;
  });

  // ------------------------------------------------------------------------ 4
  await test('4. a reloaded delegate comes back with the same place in the queue', async () => {
    await delA.page.click('#raise');
    await until('A 1st', async () => /1st in line/.test(await standingText(delA.page)), 5000);
    await delB.page.click('#raise');
    await until('B 2nd', async () => /2nd in line/.test(await standingText(delB.page)), 5000);
    const before = await delB.page.evaluate(() => window.__rt.store.requestOf()?.id);
    await delB.page.reload();
    await delB.page.waitForSelector('#meeting:not(.hidden)', { timeout: 10000 });
    const text = await until('B 2nd after reload', async () => {
      const t = await standingText(delB.page);
      return /2nd in line/.test(t) && t;
    }, 10000);
    const after = await delB.page.evaluate(() => window.__rt.store.requestOf()?.id);
    assert(before === after, `same request (${before} → ${after})`);
    // And media again after the reload.
    await until('B decodes room video after reload', async () => (programVideo(await stats(delB.page))?.framesDecoded ?? 0) > 0, 15000);
    return `request ${after}: "${text.split('\n')[0]}"`;
  });

  // Keyboard reordering in the console: Alt+↓ on A moves A behind B.
  await test('4b. the chair reorders the queue by keyboard (Alt+↓)', async () => {
    const li = mod.page.locator(`#list-queue li:has-text("${nameA}")`);
    await li.focus();
    await mod.page.keyboard.press('Alt+ArrowDown');
    await until('B 1st after the move', async () => /You are next|1st in line/.test(await standingText(delB.page)), 5000);
    await until('A 2nd after the move', async () => /2nd in line/.test(await standingText(delA.page)), 5000);
    const focused = await mod.page.evaluate(() => document.activeElement?.closest('li')?.textContent ?? '');
    assert(focused.includes(nameA), `focus stays on the moved row (${focused})`);
    // N: next speaker by keyboard.
    await mod.page.locator('body').focus();
    await mod.page.keyboard.press('n');
    await until('B granted by N', async () => /You have the floor/.test(await standingText(delB.page)), 5000);
    // R revokes the holder the console knows of: wait until the console has seen the grant
    // too (the delegate's page can hear of it first; a slow CI machine showed the race).
    await until('the console shows B holding', () => mod.page.evaluate((n) => window.__rt.store.floor.holders.some((r) => !r.chair && r.beneficiary.name === n), nameB), 5000);
    await mod.page.keyboard.press('r');
    await until('B revoked by R', async () => !/You have the floor/.test(await standingText(delB.page)), 5000);
    return 'Alt+↓ moved A to 2nd; N granted B; R revoked B';
  });

  // ------------------------------------------------------------------------ 9
  await test('9. the chair asks a delegate to reconnect: back at once, same place, media again', async () => {
    const notes = [];
    const st0 = await standingText(delA.page);
    const req0 = await delA.page.evaluate(() => window.__rt.store.requestOf()?.id);
    assert(req0 !== undefined, `A has a request before (${st0})`);
    const joins0 = await delA.page.evaluate(() => window.__rt.conn.joins);
    const resumes0 = await delA.page.evaluate(() => window.__rt.conn.resumes);
    const seq0 = await delA.page.evaluate(() => window.__rt.store.seq);
    const states0 = await delA.page.evaluate(() => window.__rt.states.length);
    await mod.page.click(`#reconnect-${idA}`);
    const t0 = Date.now();
    // The console's confirmation is a toast, which goes after a few seconds: watched from
    // now on, while the rest of the test waits for the media.
    const confirmed = until('the console confirms', () => mod.page.evaluate(() => [...document.querySelectorAll('.toast-info')].map((t) => t.textContent).find((t) => /reconnect/.test(t ?? ''))), 8000, 50);
    confirmed.catch(() => {});
    // The page shows it is reconnecting (the banner keeps it up a moment), then is back.
    const shown = await until('A shows reconnecting', async () => {
      const x = await delA.page.evaluate(() => ({ state: document.getElementById('conn')?.dataset.state, text: document.getElementById('conn')?.textContent }));
      return x.state === 'reconnecting' && x;
    }, 5000, 20);
    notes.push(`banner "${shown.text}"`);
    await delA.page.screenshot({ path: join(ARTIFACTS, 'delegate-reconnecting.png') });
    await until('A joined again', () => delA.page.evaluate((j) => window.__rt.conn.joins > j && window.__rt.conn.state === 'open', joins0), 5000, 20);
    const back = Date.now() - t0;
    // It resumed its event stream (no snapshot): the store went on from where it was.
    const resumed = await delA.page.evaluate(() => ({ resumes: window.__rt.conn.resumes, seq: window.__rt.store.seq }));
    assert(resumed.resumes === resumes0 + 1, `resumed, not welcomed afresh (${resumes0} → ${resumed.resumes})`);
    assert(resumed.seq > seq0, `events after ${seq0} applied (now ${resumed.seq})`);
    notes.push(`resumed from seq ${seq0} to ${resumed.seq}`);
    const states = await delA.page.evaluate((n) => window.__rt.states.slice(n), states0);
    assert(states.some(([s, why]) => s === 'reconnecting' && why === 'reconnect'), `states ${JSON.stringify(states)}`);
    assert(states[states.length - 1][0] === 'open', `ends open: ${JSON.stringify(states)}`);
    const gap = states[states.length - 1][2] - states.find(([s]) => s === 'reconnecting')[2];
    notes.push(`rejoined in ${gap} ms (no backoff); states ${states.map(([s, w]) => `${s}${w ? `:${w}` : ''}`).join(' → ')}`);
    // Same place in the queue, same request.
    const req1 = await until('A keeps the request', () => delA.page.evaluate(() => window.__rt.store.requestOf()?.id), 5000);
    assert(req1 === req0, `same request (${req0} → ${req1})`);
    const st1 = await until('A still in line', async () => {
      const t = await standingText(delA.page);
      return t.split('\n')[0] === st0.split('\n')[0] && t;
    }, 5000);
    notes.push(`request ${req1}: "${st1.split('\n')[0]}"`);
    // Media afresh: a new subscribe connection decoding the room, frames growing; publishing again.
    const f1 = await until('A decodes room video again', async () => {
      const v = programVideo(await stats(delA.page));
      return v && v.framesDecoded > 0 && v.framesDecoded;
    }, 15000, 50);
    await sleep(1000);
    const f2 = programVideo(await stats(delA.page))?.framesDecoded ?? 0;
    assert(f2 > f1, `frames grow (${f1} → ${f2})`);
    const out = await until('A publishes again', async () => {
      const o = (await stats(delA.page)).outbound.filter((x) => x.bytesSent > 0);
      return o.length && o;
    }, 10000);
    notes.push(`media back ${Date.now() - t0} ms after the click; frames ${f1} → ${f2} in 1 s; sends ${out.map((o) => `${o.kind}${o.rid ? ':' + o.rid : ''}`).join(' ')}`);
    const info = await confirmed;
    notes.push(`console: "${info.replace(/^ℹ\s*/, '').replace(/×$/, '').trim()}"; websocket back in ${back} ms`);
    return notes.join('; ');
  });

  // ------------------------------------------------------------------------ 10
  await test('10. the chair removes a delegate (inline confirmation by keyboard): removed page, no reconnect, gone from the list', async () => {
    const notes = [];
    const idC = 'delegate-rm';
    const nameC = 'Kurmanbek Osmonov';
    const delC = await open(srv.invite('delegate', nameC, 'Kyrgyz Republic', 'dlg', idC), 'delegateC');
    try {
      await joinDelegate(delC.page);
      await delC.page.click('#raise');
      await until('C in line', async () => /in line|You are next/.test(await standingText(delC.page)), 5000);
      const reqC = await delC.page.evaluate(() => window.__rt.store.requestOf()?.id);
      await mod.page.waitForSelector(`#part-list [data-participant="${idC}"]`);
      // Remove, then Escape: nothing happens, the focus is back on "Remove".
      await mod.page.click(`#remove-${idC}`);
      await mod.page.waitForSelector(`#remove-confirm-${idC}`);
      let focus = await mod.page.evaluate(() => document.activeElement?.id);
      assert(focus === `remove-yes-${idC}`, `focus on the confirm button (${focus})`);
      await mod.page.keyboard.press('Escape');
      await until('confirmation closed', () => mod.page.evaluate((id) => !document.getElementById(`remove-confirm-${id}`), idC), 2000);
      focus = await mod.page.evaluate(() => document.activeElement?.id);
      assert(focus === `remove-${idC}`, `focus back on Remove (${focus})`);
      assert(await delC.page.evaluate(() => window.__rt.conn.state === 'open'), 'C still connected after Escape');
      // By keyboard: Enter on "Remove", Enter on "Yes, remove".
      await mod.page.keyboard.press('Enter');
      await mod.page.waitForSelector(`#remove-confirm-${idC}`);
      const question = await mod.page.innerText(`#remove-confirm-${idC}`);
      await mod.page.screenshot({ path: join(ARTIFACTS, 'moderator-remove-confirm.png') });
      await mod.page.keyboard.press('Enter');
      const msg = await until('C shows the removed message', async () => {
        const t = await delC.page.evaluate(() => document.getElementById('removed')?.innerText ?? '');
        return /The chair removed you from the meeting/.test(t) && t;
      }, 5000, 20);
      await delC.page.screenshot({ path: join(ARTIFACTS, 'delegate-removed.png') });
      const c = await delC.page.evaluate(() => ({ state: window.__rt.conn.state, reason: window.__rt.conn.closeReason, joins: window.__rt.conn.joins, banner: document.getElementById('conn')?.textContent }));
      assert(c.state === 'closed' && c.reason === 'removed', `C closed: ${JSON.stringify(c)}`);
      // And stays so: no reconnect attempt.
      await sleep(3000);
      const later = await delC.page.evaluate(() => ({ state: window.__rt.conn.state, joins: window.__rt.conn.joins, states: window.__rt.states.map(([s, w]) => `${s}${w ? ':' + w : ''}`) }));
      assert(later.state === 'closed' && later.joins === c.joins, `still closed 3 s later: ${JSON.stringify(later)}`);
      assert(later.states[later.states.length - 1] === 'closed:removed' && !later.states.slice(later.states.indexOf('closed:removed')).some((x) => /connecting/.test(x)), `no reconnect: ${later.states.join(' → ')}`);
      const devices = await delC.page.evaluate(() => window.__rt.devices());
      assert(devices.length > 0 && devices.every((x) => x === 'ended'), `camera and microphone off: ${devices}`);
      // The console: gone from the list, presence "removed" in the store, request ended.
      await until('C gone from the participant list', () => mod.page.evaluate((id) => !document.querySelector(`#participants [data-participant="${id}"]`), idC), 5000);
      const m = await mod.page.evaluate((a) => ({ presence: window.__rt.store.participants.get(a.id)?.presence, live: window.__rt.store.allRequests().some((r) => r.id === a.req) }), { id: idC, req: reqC });
      assert(m.presence === 'removed', `presence ${m.presence}`);
      assert(!m.live, `C's request ${reqC} ended`);
      notes.push(`confirm "${question.split('\n')[0]}"; C: "${msg.split('\n')[0]}", banner "${c.banner}", ${later.states.join(' → ')}, devices ${devices.join('/')}; console: presence ${m.presence}, request ${reqC} ended, not listed`);
      return notes.join('; ');
    } finally {
      await delC.ctx.close();
    }
  });

  // ------------------------------------------------------------------------ 11
  await test('11. remove / ask_reconnect refused: a delegate (forbidden), the chair removing themselves (invalid_value), nobody (not_found)', async () => {
    const notes = [];
    for (const type of ['remove', 'ask_reconnect']) {
      const code = await delB.page.evaluate((t) => window.__rt.conn.send(t, { participant: 'delegate-1' }).then(() => 'acked', (e) => e.code), type);
      assert(code === 'forbidden', `delegate ${type}: ${code}`);
      notes.push(`delegate ${type}: ${code}`);
    }
    const self = await mod.page.evaluate(() => window.__rt.conn.send('remove', { participant: window.__rt.store.you.id }).then(() => 'acked', (e) => e.code));
    assert(self === 'invalid_value', `chair removing themselves: ${self}`);
    const none = await mod.page.evaluate(() => window.__rt.conn.send('remove', { participant: 'nobody-here' }).then(() => 'acked', (e) => e.code));
    assert(none === 'not_found', `removing nobody: ${none}`);
    const none2 = await mod.page.evaluate(() => window.__rt.conn.send('ask_reconnect', { participant: 'nobody-here' }).then(() => 'acked', (e) => e.code));
    assert(none2 === 'not_found', `asking nobody: ${none2}`);
    notes.push(`chair self-remove: ${self}; unknown: ${none}/${none2}`);
    const toast = await until('the console shows the error', () => mod.page.evaluate(() => [...document.querySelectorAll('.toast-error')].map((t) => t.textContent).find((t) => /not_found|invalid_value/.test(t ?? ''))), 3000);
    notes.push(`toast: ${toast.replace(/×$/, '').trim()}`);
    // Everyone is still connected.
    for (const [label, d] of [['A', delA], ['B', delB]]) {
      assert(await d.page.evaluate(() => window.__rt.conn.state === 'open'), `${label} still connected`);
    }
    return notes.join('; ');
  });

  // ------------------------------------------------------------------------ 5
  await test('5. minutes from the console list the interventions', async () => {
    // An in-room speaker too, through the form.
    await mod.page.fill('#inroom-name', 'Rauf Hajiyev');
    await mod.page.fill('#inroom-delegation', 'Republic of Azerbaijan');
    await mod.page.click('#inroom-add');
    await until('in-room speaker queued', () => mod.page.evaluate(() => window.__rt.store.floor.queue.some((r) => r.beneficiary.name === 'Rauf Hajiyev')), 5000);
    await mod.page.click(`#list-queue li:has-text("Rauf Hajiyev") [data-act=grant]`);
    await until('Rauf speaking', () => mod.page.evaluate(() => window.__rt.store.floor.holders.some((r) => r.beneficiary.name === 'Rauf Hajiyev')), 5000);
    await sleep(300);
    await mod.page.click(`.holder:has-text("Rauf Hajiyev") [data-act=revoke]`);
    await until('Rauf done', () => mod.page.evaluate(() => window.__rt.store.floor.holders.length === 0), 5000);
    const get = (sel) =>
      mod.page.evaluate(async (sel) => {
        const a = document.querySelector(sel);
        const r = await fetch(a.href);
        return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
      }, sel);
    const md = await get('#minutes-md');
    const csv = await get('#minutes-csv');
    assert(md.status === 200 && csv.status === 200, `status ${md.status}/${csv.status}`);
    writeFileSync(join(ARTIFACTS, 'minutes.md'), md.body);
    writeFileSync(join(ARTIFACTS, 'minutes.csv'), csv.body);
    for (const n of [nameA, nameB, 'Rauf Hajiyev']) {
      assert(md.body.includes(n), `minutes.md names ${n}`);
      assert(csv.body.includes(n), `minutes.csv names ${n}`);
    }
    const rows = csv.body.trim().split('\n').length - 1;
    assert(rows >= 3, `csv has ${rows} interventions`);
    return `${rows} interventions in the CSV; md ${md.body.length} bytes`;
  });

  // ------------------------------------------------------------------------ 6
  // The issue's 1 s target is checked by join-probe.mjs (check.sh), a newcomer beside the room
  // only. Here the same join runs with this suite's other pages open (the room, three
  // delegates, the console, the timer: seven pages encoding and decoding video on the same
  // cores), so its bound (E2E_JOIN_LOAD_TARGET_MS, 15 s) only says the join still completes
  // in seconds under load (p50 1.8-3.5 s here, 9 s when this VM was slow).
  await test('6. join time under load: link opened → first room video frame decoded (p50 of 5)', async () => {
    const runs = [];
    const marks = [];
    const target = Number(process.env.E2E_JOIN_LOAD_TARGET_MS ?? 15000);
    for (let i = 0; i < 5; i++) {
      const url = srv.invite('delegate', `Join timer ${i + 1}`, 'Test delegation', 'dlg');
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await ctx.newPage();
      const t0 = Date.now();
      await page.goto(url, { waitUntil: 'commit' });
      // Watched from inside the page (getStats every 10 ms, ms since navigation): polling from
      // here through the debugging protocol would add its own round trips to the number.
      const at = await page.waitForFunction(() => {
        const w = /** @type {any} */ (window);
        if (!w.__rt?.stats) return false;
        if (!w.__ff) {
          w.__ff = { at: 0 };
          const poll = async () => {
            const s = await w.__rt.stats().catch(() => null);
            const v = s?.inbound.find((x) => x.kind === 'video' && x.slot?.slot === 'track' && x.slot.source === 'program');
            if (v && v.framesDecoded > 0) w.__ff.at = Math.round(performance.now());
            else setTimeout(poll, 10);
          };
          void poll();
        }
        return w.__ff.at || false;
      }, null, { timeout: 15000, polling: 50 });
      runs.push(await at.jsonValue());
      marks.push(await page.evaluate(() => ({ ...window.__rt.conn.marks, first_frame_seen: Math.round(performance.now()), test_ms: 0 })));
      marks[marks.length - 1].test_ms = Date.now() - t0;
      await ctx.close();
    }
    const sorted = [...runs].sort((a, b) => a - b);
    const p50 = sorted[2];
    const med = (k) => {
      const v = marks.map((m) => m[k]).filter((x) => x !== undefined).sort((a, b) => a - b);
      return v[Math.floor(v.length / 2)];
    };
    const breakdown = Object.fromEntries(['ws_created', 'ws_open', 'welcome', 'media_preferences_sent', 'subscribe_offer', 'subscribe_answer_sent', 'subscribe_answered', 'subscribe_connected', 'first_frame', 'test_ms'].map((k) => [k, med(k)]));
    writeFileSync(
      join(ARTIFACTS, 'join-time.json'),
      JSON.stringify({ runs_ms: runs, p50_ms: p50, bound_ms: target, load: 'seven other pages of this suite open',  median_milestones_ms_since_navigation: breakdown, marks, what: 'delegate link opened (navigation start) → first room program frame decoded (getStats framesDecoded > 0, polled in the page every 10 ms), loopback, headless Chromium; test_ms: the same seen from the test' }, null, 2),
    );
    const where = Object.entries(breakdown).map(([k, v]) => `${k} ${v}`).join(', ');
    assert(p50 <= target, `p50 ${p50} ms is over the ${target} ms target (runs ${runs.join(', ')}; median milestones since navigation: ${where})`);
    return `p50 ${p50} ms (runs ${runs.join(', ')} ms; ${where})`;
  });

  // ------------------------------------------------------------------------ 3
  await test('3. presentation slot: start, wrap-up on the timer, overrun, next slot', async () => slotTest);

  // ------------------------------------------------------------------------ 12
  // Stream health (issue 5): the server's `health` every 2 s to technicians, built from what it
  // sees of every stream and from the pages' own `client_stats`.
  await test('12. the technician page shows every participant\'s stream health, updating', async () => {
    const notes = [];
    const tech = await open(srv.links.dlg.technician, 'technician', { viewport: { width: 1280, height: 800 } });
    try {
      const rowSel = (id) => `#health-table tr[data-participant="${id}"]`;
      const roomId = await until('the room in the technician\'s participant list', () => tech.page.evaluate(() => [...(window.__rt?.store?.participants.values() ?? [])].find((p) => p.role === 'room' && p.presence === 'joined')?.id), 10000);
      // Everyone this test joined who still has media: the room and both delegates (the chair's
      // console has none; the delegates of tests 6 and 10 are gone).
      const want = [roomId, idA, idB];
      await until('a health row for the room and both delegates', () => tech.page.evaluate((ids) => ids.every((id) => document.querySelector(`#health-table tr[data-participant="${id}"]`)), want), 15000);
      const order = await tech.page.evaluate(() => [...document.querySelectorAll('#health-table tbody tr')].map((tr) => tr.dataset.participant));
      assert(order[0] === roomId, `the room's row first: ${order.join(', ')}`);
      const modId = await mod.page.evaluate(() => window.__rt.store.you.id);
      notes.push(`rows ${order.join(', ')}${order.includes(modId) ? '' : ' (the console has no media: no row)'}`);
      // Every row is updated by each health message: at least 2 updates (3 values) in 9 s.
      const seen = Object.fromEntries(want.map((id) => [id, new Set()]));
      const t0 = Date.now();
      while (Date.now() - t0 < 9000) {
        const now = await tech.page.evaluate((ids) => ids.map((id) => document.querySelector(`#health-table tr[data-participant="${id}"]`)?.dataset.updated ?? ''), want);
        now.forEach((v, i) => v && seen[want[i]].add(v));
        if (want.every((id) => seen[id].size >= 3)) break;
        await sleep(200);
      }
      for (const id of want) assert(seen[id].size >= 3, `row ${id} updated ${seen[id].size - 1} time(s) in 9 s (data-updated ${[...seen[id]].join(', ')})`);
      const gaps = [...seen[roomId]].map(Number).sort((a, b) => a - b).map((x, i, a) => (i ? x - a[i - 1] : 0)).slice(1);
      notes.push(`each row updated ≥ 2 times in ${Date.now() - t0} ms (room: every ${gaps.join('/')} ms)`);
      // The room's row shows what it sends: a score with its grade.
      const roomRow = await tech.page.evaluate((sel) => {
        const up = document.querySelector(`${sel} [data-col="up"]`);
        return { score: up?.dataset.score ?? '', text: up?.innerText.replace(/\s+/g, ' ').trim() ?? '', card: document.getElementById('room-score')?.dataset.score };
      }, rowSel(roomId));
      assert(/^\d+$/.test(roomRow.score) && /excellent|good|poor/.test(roomRow.text), `the room's sending score: "${roomRow.score}" (${roomRow.text})`);
      assert(/^\d+$/.test(roomRow.card ?? ''), `the room card beside the program shows a score too (${roomRow.card})`);
      notes.push(`room sends "${roomRow.text}"`);
      // The pages' own reports reach the server (client_stats, in the row's \`client\`), and none is refused.
      const client = await until('the room\'s client_stats in the health', () => tech.page.evaluate((id) => window.__rt.store.health?.participants.find((p) => p.participant === id)?.client, roomId), 6000);
      const reporters = [];
      for (const [label, page] of [['room', room.page], ['A', delA.page], ['B', delB.page]]) {
        const r = await page.evaluate(() => { const x = window.__rt.media.reporter; return { sent: x.sent, acked: x.acked, codes: x.codes }; });
        const bad = Object.keys(r.codes).filter((c) => c !== 'disconnected');
        assert(r.acked > 0 && bad.length === 0, `${label}'s client_stats: ${JSON.stringify(r)}`);
        reporters.push(`${label} ${r.acked}/${r.sent}`);
      }
      notes.push(`client_stats acked ${reporters.join(', ')}; room's report ${JSON.stringify(client)}`);
      // An action: "Keyframe" on the room's row is acked, with no error toast; the focus stays
      // on the button while the row updates.
      const kf = `${rowSel(roomId)} [data-act="keyframe"]`;
      const before = await tech.page.evaluate((sel) => document.querySelector(sel)?.closest('tr')?.dataset.updated, kf);
      await tech.page.click(kf);
      const acted = await until('the server answers request_keyframe', () => tech.page.evaluate(() => window.__rt.actions.find((a) => a.type === 'request_keyframe')), 5000);
      assert(acted.ok, `request_keyframe refused: ${acted.code}`);
      await until('the row updates after the click', () => tech.page.evaluate((a) => document.querySelector(a.sel)?.closest('tr')?.dataset.updated !== a.before, { sel: kf, before }), 5000);
      const after = await tech.page.evaluate((sel) => ({ focus: document.activeElement === document.querySelector(sel), status: document.querySelector(sel)?.closest('td')?.querySelector('.row-status')?.textContent ?? '', errors: [...document.querySelectorAll('.toast-error')].map((t) => t.textContent) }), kf);
      assert(after.errors.length === 0, `error toasts: ${after.errors.join(' | ')}`);
      assert(after.focus, 'the focus stays on "Keyframe" while the row updates');
      notes.push(`Keyframe acked ("${after.status}"), no error toast, focus kept`);
      // An alert to acknowledge, if the meeting raised one.
      // (The log is re-rendered as alerts change: the button is found by its alert's id,
      // with a locator that looks it up again at the click, not a handle that may be gone.)
      const id = await tech.page.evaluate(() => document.querySelector('#alert-log button[data-act="ack"]')?.closest('li')?.dataset.alert ?? null);
      if (id) {
        await tech.page.locator(`#alert-log li[data-alert="${id}"] button[data-act="ack"]`).click({ timeout: 5000 });
        await until('the alert is acknowledged', () => tech.page.evaluate((x) => document.querySelector(`#alert-log li[data-alert="${x}"]`)?.dataset.acked === 'true', id), 5000);
        notes.push(`alert ${id} acknowledged`);
      } else {
        notes.push('no alert to acknowledge');
      }
      const header = await tech.page.evaluate(() => ['cpu', 'health-at', 'alert-count'].map((id) => document.getElementById(id)?.textContent).join(' | '));
      notes.push(`header: ${header}`);
      await tech.page.screenshot({ path: join(ARTIFACTS, 'technician-health.png'), fullPage: true });
      await tech.page.setViewportSize({ width: 1920, height: 1080 });
      await sleep(2500);
      await tech.page.screenshot({ path: join(ARTIFACTS, 'technician-large.png') });
      return notes.join('; ');
    } finally {
      await tech.ctx.close();
    }
  });

  // ------------------------------------------------------------------------ 7
  await test('7. screenshots of every page', async () => {
    const shots = [];
    const shot = async (page, name) => {
      await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
      shots.push(name);
    };
    // A queue to look at: A and an in-room speaker waiting, B speaking.
    await delA.page.evaluate(() => window.__rt.store.requestOf() || window.__rt.conn.send('raise_hand', { list: 'main' }));
    await mod.page.fill('#inroom-name', 'Ms. Gulnara Aliyeva');
    await mod.page.fill('#inroom-delegation', 'Republic of Kazakhstan');
    await mod.page.click('#inroom-add');
    await delB.page.evaluate(() => window.__rt.store.requestOf() || window.__rt.conn.send('raise_hand', { list: 'reply' }));
    await sleep(300);
    await mod.page.evaluate(() => window.__rt.cmd('next', { list: 'main' }));
    await sleep(1500);
    await shot(mod.page, 'moderator');
    await shot(delA.page, 'delegate');
    await shot(delB.page, 'delegate-b');
    await shot(room.page, 'room');
    await shot(timerPage.page, 'timer');
    const extra = [
      ['observer', srv.links.dlg.observer],
      ['technician', srv.links.dlg.technician],
      ['assistant', srv.links.dlg.assistant],
    ];
    for (const [name, url] of extra) {
      const p = await open(url, name, { viewport: { width: 1280, height: 800 } });
      // The technician's table fills with the first health report (every 2 s).
      // (Test 12 proves the rows fill and update; here a loaded machine only delays the picture.)
      if (name === 'technician') await p.page.waitForSelector('#health-table tbody tr[data-participant]', { timeout: 20000 }).catch(async () => {
        const st = await p.page.evaluate(() => ({ conn: window.__rt?.conn?.state, health: !!window.__rt?.health?.(), rows: document.querySelectorAll('#health-table tbody tr').length })).catch(() => ({}));
        shots.push(`technician (no health row within 20 s: ${JSON.stringify(st)})`);
      });
      await sleep(name === 'assistant' ? 800 : 2500);
      await shot(p.page, name);
      await p.ctx.close();
    }
    // Phone width: the lobby and the meeting.
    const phone = await open(srv.invite('delegate', 'Dilnoza Yusupova', 'Republic of Uzbekistan', 'dlg'), 'phone', { viewport: { width: 390, height: 844 } });
    await phone.page.waitForSelector('#join');
    await sleep(1500);
    await shot(phone.page, 'delegate-phone-check');
    await phone.page.click('#join');
    await phone.page.evaluate(() => window.__rt.conn.send('raise_hand', { list: 'main' }));
    await sleep(1500);
    await phone.page.screenshot({ path: join(ARTIFACTS, 'delegate-phone.png'), fullPage: true });
    shots.push('delegate-phone');
    await phone.ctx.close();
    return `${shots.length} screenshots in ${ARTIFACTS}`;
  });
  // ------------------------------------------------------------------------ 13
  // Every page above ran under its Content-Security-Policy (the early-join inline script by
  // hash, everything else from this origin): nothing it needs was refused.
  // ------------------------------------------------------------------------ 14
  await test('14. a one-time link opens once: its reload rejoins, a forwarded copy says "already used"; revoked, it says "withdrawn"', async () => {
    const idO = 'delegate-once';
    const link = srv.invite('delegate', 'Zarina Nazarova', 'Republic of Tajikistan', 'dlg', idO, { once: true });
    const first = await open(link, 'delegateOnce');
    let copy = null;
    try {
      await joinDelegate(first.page);
      const a = await first.page.evaluate(() => ({ id: window.__rt.store.you?.id, token: window.__rt.conn.token, invite: window.__rt.conn.inviteToken }));
      assert(a.id === idO, `joined as ${a.id}`);
      assert(a.token !== a.invite, 'the page did not switch to its session token');
      // A reload (same tab): back in with the session token, the same participant.
      await first.page.reload();
      await until('the reloaded page is connected again', () => first.page.evaluate(() => window.__rt?.conn?.state === 'open'), 15000);
      const b = await first.page.evaluate(() => ({ id: window.__rt.store.you?.id, token: window.__rt.conn.token }));
      assert(b.id === idO && b.token === a.token, `after the reload: ${JSON.stringify(b)}`);
      // The link forwarded to someone else: refused, with a page that says why, for good.
      copy = await open(link, 'delegateOnceCopy');
      const text = await until('the copy says the link was used', async () => {
        const t = await copy.page.evaluate(() => document.getElementById('refused')?.innerText ?? '');
        return /already been used/.test(t) && t;
      }, 15000, 100);
      await copy.page.screenshot({ path: join(ARTIFACTS, 'delegate-link-used.png') });
      const c = await copy.page.evaluate(() => ({ state: window.__rt.conn.state, code: window.__rt.conn.refusal?.code, joins: window.__rt.conn.joins, title: document.title }));
      assert(c.state === 'closed' && c.code === 'token_used' && c.joins === 0, `the copy: ${JSON.stringify(c)}`);
      await sleep(2000);
      const still = await copy.page.evaluate(() => window.__rt.states.map(([s, w]) => `${s}${w ? ':' + w : ''}`));
      assert(still[still.length - 1] === 'closed:refused', `the copy keeps trying: ${still.join(' → ')}`);
      // And the holder was not disturbed by it.
      const holder = await first.page.evaluate(() => ({ state: window.__rt.conn.state, id: window.__rt.store.you?.id }));
      assert(holder.state === 'open' && holder.id === idO, `the holder after the copy: ${JSON.stringify(holder)}`);
      // "Remove and revoke the invitation": the holder's page, reloaded, says the link was withdrawn.
      await mod.page.waitForSelector(`#part-list [data-participant="${idO}"]`);
      await mod.page.click(`#remove-${idO}`);
      await mod.page.click(`#remove-revoke-${idO}`);
      await until('the holder shows the removed message', async () => /The chair removed you/.test(await first.page.evaluate(() => document.getElementById('removed')?.innerText ?? '')), 5000);
      // The server refuses the link itself (401): its refusal page says what that means.
      const resp = await first.page.reload();
      const withdrawn = await until('the reloaded page says the invitation was withdrawn', async () => {
        const t = await first.page.evaluate(() => document.getElementById('refused')?.innerText ?? '');
        return /This invitation was withdrawn/.test(t) && t;
      }, 15000, 100);
      const r = await first.page.evaluate(() => ({ code: document.body.dataset.refused, ws: !!window.__rt?.conn }));
      assert(resp?.status() === 401 && r.code === 'token_revoked' && !r.ws, `the reloaded page: ${resp?.status()} ${JSON.stringify(r)}`);
      await first.page.screenshot({ path: join(ARTIFACTS, 'delegate-link-withdrawn.png') });
      return `joined as ${idO}, reload rejoined with the session token; the copy: "${text.split('\n')[0]}" (${c.code}), states ${still.join(' → ')}; the holder still connected; removed and revoked, reloaded: "${withdrawn.split('\n')[0]}" (${r.code})`;
    } finally {
      await first.ctx.close();
      await copy?.ctx.close();
    }
  });

  await test('13. no page broke its Content-Security-Policy, and the headers are there', async () => {
    const refused = consoleLog.filter((l) => /Content Security Policy|Refused to (execute|load|connect|apply)/i.test(l));
    assert(refused.length === 0, `CSP refusals: ${refused.slice(0, 3).join(' | ')}`);
    const { ctx, page } = await open(srv.invite('delegate', 'Header check', 'Test delegation', 'dlg'), 'headers');
    const r = await page.request.get(page.url());
    const h = r.headers();
    await ctx.close();
    assert(/script-src 'self' 'sha256-/.test(h['content-security-policy'] ?? ''), `csp ${h['content-security-policy']}`);
    assert(h['x-frame-options'] === 'DENY', `x-frame-options ${h['x-frame-options']}`);
    assert(/microphone=\(self\)/.test(h['permissions-policy'] ?? ''), `permissions-policy ${h['permissions-policy']}`);
    return `no refusals in ${consoleLog.length} console lines; ${h['content-security-policy'].split(';').length} directives`;
  });
} catch (e) {
  console.log(`FAIL set-up: ${e?.stack ?? e}`);
  results.push({ name: 'set-up', ok: false, error: String(e) });
} finally {
  writeFileSync(join(ARTIFACTS, 'browser-console.log'), consoleLog.join('\n'));
  writeFileSync(join(ARTIFACTS, 'results.json'), JSON.stringify(results, null, 2));
  await browser.close().catch(() => {});
  srv.saveLog();
  await srv.stop();
}

const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
