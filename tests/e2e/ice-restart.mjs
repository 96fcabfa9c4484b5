// Browser test: media comes back by ICE restart when the network under it fails, with no
// rejoin. Real Chromium, the real server binary, and a UDP relay in the media path (the
// server advertises the relay's 127.0.0.2; udp-relay.mjs) that the test cuts for one
// delegate's flows, as a Wi-Fi drop would: (1) with the websocket up, (2) with the websocket
// down too (a resume with the media held), (3) for a delegate without a camera, whose sending
// connection (no simulcast) restarts in place, (4) with no network long enough that the ICE
// restart fails, so the page reconnects in full.
//
//   ROUNDTABLE_BIN=target/release/roundtable node tests/e2e/ice-restart.mjs
//
// Prints PASS/FAIL and exits 1 on failure; writes target/e2e-artifacts/ice-restart.json.
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch, until, ARTIFACTS, BIN } from './lib.mjs';
import { freeUdpPort, startRelay } from './udp-relay.mjs';

if (!existsSync(BIN)) {
  console.error(`no server binary at ${BIN} (set ROUNDTABLE_BIN)`);
  process.exit(2);
}
mkdirSync(ARTIFACTS, { recursive: true });

const MEETING = `
[[meeting]]
id = "ice"
title = "E2E: ICE restart"
[meeting.floor]
policy = "moderated"
[[meeting.agenda]]
id = "dialogue"
kind = "dialogue"
title = "Dialogue"
minutes = 30
`;
/** How long the delegate's flows are cut: past `disconnected` (about 5 s in Chrome) plus the
 * client's 3 s wait before it restarts. */
const BLACKOUT_MS = 12000;
/** The second cut, websocket included. */
const WS_OUTAGE_MS = 6000;
/** The fourth: every flow, new ones too, for longer than an ICE restart is given (10 s). */
const FULL_OUTAGE_MS = 24000;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const udpPort = await freeUdpPort('127.0.0.1');
const relay = await startRelay({ host: '127.0.0.2', port: udpPort }, { host: '127.0.0.1', port: udpPort });
const srv = await startServer(MEETING, {
  debug: !!process.env.E2E_DEBUG,
  media: `udp = "127.0.0.1:${udpPort}"\nadvertise_ip = "127.0.0.2"\nice_tcp = false`,
});
const browser = await launch();
const consoleLog = [];
/** The websocket of each page, to cut; and until when new ones are refused. */
const links = new Map();
let wsOutageUntil = 0;
/**
 * The page's websocket dies as on a lost network: the page sees it close (1011), the server
 * hears nothing (its side stays open, silent, until the page's new connection replaces it).
 * @param {string} label @param {number} ms new websockets fail for this long
 */
function cutWebsocket(label, ms) {
  const l = links.get(label);
  wsOutageUntil = Date.now() + ms;
  l.link.dead = true;
  l.ws.close({ code: 1011, reason: 'test: network lost' });
}
async function open(url, label) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on('console', (m) => consoleLog.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLog.push(`[${label}] pageerror: ${e.message}`));
  // The server learns this browser's address only from its checks, through the relay (as for
  // a browser behind a NAT whose host candidates it cannot reach): its candidates are taken
  // out of what it sends. Otherwise the server's checks find the browser directly on
  // loopback, around the relay, and the cut would not cut.
  await page.routeWebSocket(/\/ws/, (ws) => {
    // While the test has the network down, no websocket gets through.
    if (Date.now() < wsOutageUntil) {
      ws.close({ code: 1011, reason: 'test: no network' });
      return;
    }
    const server = ws.connectToServer();
    const link = { dead: false };
    links.set(label, { ws, link });
    server.onMessage((msg) => {
      if (!link.dead) ws.send(msg);
    });
    ws.onMessage((msg) => {
      if (link.dead) return;
      if (typeof msg !== 'string') return server.send(msg);
      let m;
      try {
        m = JSON.parse(msg);
      } catch {
        return server.send(msg);
      }
      if (m.type === 'ice_candidate' && m.candidate) return;
      if ((m.type === 'publish' || m.type === 'subscribe_answer') && typeof m.sdp === 'string') {
        m.sdp = m.sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:')).join('\r\n');
        return server.send(JSON.stringify(m));
      }
      server.send(msg);
    });
  });
  // Every media state, from the start.
  await page.addInitScript(() => {
    /** @type {any} */ (window).__mediaStates = [];
    /** @type {any} */ (window).__mediaLines = [];
    /** @type {any} */ (window).__resumed = [];
  });
  await page.goto(url);
  return { ctx, page };
}

/**
 * Records on the page every media state and every text of its media line, with the time: a
 * state can come and go between two polls (an ICE restart on a new port connects in 100 ms).
 */
const watch = (page) =>
  page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.__rt.media.on('state', (s, why) => w.__mediaStates.push([s, why, Date.now()]));
    w.__rt.conn.on('resumed', (m) => w.__resumed.push(!!m.media_held));
    for (const [name, pc] of [['subscribe', w.__rt.media.subscriber?.pc], ['publish', w.__rt.media.publisher?.pc]]) {
      pc?.addEventListener('iceconnectionstatechange', () => w.__mediaStates.push([`${name} ice ${pc.iceConnectionState}`, '', Date.now()]));
    }
    const line = document.getElementById('media-state');
    if (line) new MutationObserver(() => w.__mediaLines.push([line.textContent ?? '', Date.now()])).observe(line, { childList: true, characterData: true, subtree: true });
  });

/** When the page first entered `state` at or after `since` (ms, page clock), or null. */
const seen = (x, state, since) => x.states.find(([s, , at]) => s === state && at >= since)?.[2] ?? null;

/** What the delegate's page knows of its media. */
const info = (page) =>
  page.evaluate(async () => {
    const rt = /** @type {any} */ (window).__rt;
    const m = rt.media;
    const ufrag = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp ?? '')?.[1];
    const pc = async (/** @type {RTCPeerConnection | undefined} */ p) => {
      if (!p) return null;
      const r = await p.getStats();
      let pair = null;
      r.forEach((s) => {
        if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
        const cp = r.get(s.selectedCandidatePairId);
        const l = r.get(cp?.localCandidateId);
        const rc = r.get(cp?.remoteCandidateId);
        pair = { localPort: l?.port, remote: `${rc?.address}:${rc?.port}` };
      });
      return {
        tag: /** @type {any} */ (p).__tag ?? null,
        ice: p.iceConnectionState,
        conn: p.connectionState,
        localUfrag: ufrag(p.localDescription?.sdp),
        remoteUfrag: ufrag(p.remoteDescription?.sdp),
        pair,
      };
    };
    const st = await rt.stats();
    const program = st.inbound.find((x) => x.kind === 'video' && x.slot?.slot === 'track' && x.slot.source === 'program');
    const sent = st.outbound.filter((o) => o.kind === 'video').reduce((a, o) => a + o.bytesSent, 0);
    return {
      state: m.state,
      iceRestarts: m.iceRestarts,
      joins: rt.conn.joins,
      resumes: rt.conn.resumes,
      resumed: /** @type {any} */ (window).__resumed,
      wsState: rt.conn.state,
      frames: program?.framesDecoded ?? 0,
      // What arrives of the program video (a freeze with packets arriving is a keyframe
      // missing; without, nothing is forwarded).
      video: program ? { packets: program.packetsReceived, lost: program.packetsLost, height: program.frameHeight } : null,
      videoSent: sent,
      sub: await pc(m.subscriber?.pc),
      pub: await pc(m.publisher?.pc),
      states: /** @type {any} */ (window).__mediaStates,
      lines: /** @type {any} */ (window).__mediaLines,
    };
  });

const metric = async (name) => {
  const text = await (await fetch(`${srv.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
};

let ok = false;
const report = {};
let del;
/** The audio-only delegate (phase 3). */
let del2;
try {
  const room = await open(srv.links.ice.room, 'room');
  // The room's flows, to tell the delegate's apart (Chrome's stats do not name the port the
  // relay sees).
  await until('the room sends through the relay', () => relay.counts().flows.some((f) => f.toServer > 50), 20000);
  await new Promise((r) => setTimeout(r, 1000));
  const roomPorts = new Set(relay.counts().flows.map((f) => f.port));
  del = await open(srv.links.ice.delegate, 'delegate');
  await del.page.waitForSelector('#join');
  await until('device check ready', () => del.page.evaluate(() => !!document.querySelector('#preview')?.srcObject), 10000);
  await del.page.click('#join');
  await del.page.waitForSelector('#meeting:not(.hidden)');
  await watch(del.page);
  const before = await until('the delegate decodes the room and sends its camera, through the relay', async () => {
    const x = await info(del.page);
    return x.state === 'connected' && x.frames > 10 && x.videoSent > 0 && x.sub?.pair && x.pub?.pair && x.sub.pair.remote.startsWith('127.0.0.2:') && x;
  }, 25000);
  await del.page.evaluate(() => {
    /** @type {any} */ (window).__rt.media.subscriber.pc.__tag = 'the subscriber before';
  });
  const restartsBefore = await metric('roundtable_ice_restarts_total');
  report.before = before;

  // The delegate's network goes: its flows are dropped both ways. The websocket stays up.
  const t0 = Date.now();
  const cut = relay.counts().flows.map((f) => f.port).filter((p) => !roomPorts.has(p));
  report.cut = cut;
  relay.blackout(cut, BLACKOUT_MS);
  const during = await until('the delegate sees its media reconnecting', async () => {
    const x = await info(del.page);
    return seen(x, 'reconnecting', t0) !== null && x;
  }, BLACKOUT_MS + 5000, 200);
  report.reconnectingAfterMs = seen(during, 'reconnecting', t0) - t0;
  report.reconnectingLine = during.lines.find(([t, at]) => at >= t0 && /reconnecting/i.test(t))?.[0] ?? during.lines.map(([t]) => t).join(' | ');
  const after = await until('media connected again by ICE restart', async () => {
    const x = await info(del.page);
    return x.state === 'connected' && x.iceRestarts >= 1 && x.sub?.ice === 'connected' && x.frames > before.frames + 30 && x;
  }, BLACKOUT_MS + 30000, 250);
  report.connectedAfterMs = Date.now() - t0;
  // Frames keep coming after it.
  await new Promise((r) => setTimeout(r, 2000));
  const later = await info(del.page);
  const restartsAfter = await metric('roundtable_ice_restarts_total');
  report.after = after;
  report.later = later;
  report.metric = { before: restartsBefore, after: restartsAfter };
  report.relay = relay.counts();
  report.statesSeen = during.states;

  assert(later.sub.tag === 'the subscriber before', 'the subscribe connection was replaced (a full reconnect), not restarted');
  assert(later.joins === before.joins, `the page rejoined (joins ${before.joins} → ${later.joins})`);
  assert(later.sub.remoteUfrag !== before.sub.remoteUfrag, `the server's ufrag did not change (${later.sub.remoteUfrag})`);
  assert(later.sub.localUfrag !== before.sub.localUfrag, `the browser's ufrag did not change (${later.sub.localUfrag})`);
  assert(later.pub.localUfrag !== before.pub.localUfrag, 'the camera connection was not restarted');
  assert(later.frames > after.frames, `frames stopped after the restart (${after.frames} → ${later.frames})`);
  assert(later.videoSent > 0, 'the camera sends nothing after the restart');
  assert(restartsAfter >= restartsBefore + 1, `roundtable_ice_restarts_total ${restartsBefore} → ${restartsAfter}`);
  assert(/reconnecting audio and video/i.test(report.reconnectingLine), `the page showed "${report.reconnectingLine}" while reconnecting`);
  assert(report.relay.dropped > 0, 'the relay dropped nothing: the blackout did not cut the media path');
  await del.page.screenshot({ path: join(ARTIFACTS, 'delegate-after-ice-restart.png') });
  console.log(
    `PASS 1. media came back by ICE restart: reconnecting shown ${report.reconnectingAfterMs} ms and connected ${report.connectedAfterMs} ms after the cut (${BLACKOUT_MS} ms); ` +
      `same subscribe connection, server ufrag ${before.sub.remoteUfrag} → ${later.sub.remoteUfrag}, ` +
      `program frames ${before.frames} → ${later.frames}, ${later.iceRestarts} restart(s), ` +
      `metric ${restartsBefore} → ${restartsAfter}, relay dropped ${report.relay.dropped} packets`,
  );

  // 2. The whole network goes, websocket too, for WS_OUTAGE_MS: the page resumes, the server
  // kept its peer connections (`media_held`) and re-offers the subscribe connection with new
  // ICE credentials; no connection is rebuilt.
  const dropped0 = relay.counts().dropped;
  const t1 = Date.now();
  relay.blackout(relay.counts().flows.map((f) => f.port).filter((p) => !roomPorts.has(p)), WS_OUTAGE_MS);
  cutWebsocket('delegate', WS_OUTAGE_MS);
  await until('the page knows its websocket is down', async () => (await info(del.page)).wsState === 'reconnecting', 5000, 100);
  const back = await until('resumed, media held, connected again', async () => {
    const x = await info(del.page);
    return x.wsState === 'open' && x.resumes > later.resumes && x.state === 'connected' &&
      x.sub?.remoteUfrag !== later.sub.remoteUfrag && x.sub?.ice === 'connected' && x;
  }, WS_OUTAGE_MS + 25000, 250);
  report.resumeConnectedAfterMs = Date.now() - t1;
  await new Promise((r) => setTimeout(r, 2000));
  const final = await info(del.page);
  const restartsFinal = await metric('roundtable_ice_restarts_total');
  report.back = back;
  report.final = final;
  assert(final.resumed[final.resumed.length - 1] === true, `resumed without media held: ${JSON.stringify(final.resumed)}`);
  assert(final.sub.tag === 'the subscriber before', 'the subscribe connection was rebuilt after the resume');
  assert(final.frames > back.frames, `frames stopped after the resume (${back.frames} → ${final.frames})`);
  assert(restartsFinal >= restartsAfter + 1, `roundtable_ice_restarts_total ${restartsAfter} → ${restartsFinal}`);
  assert(relay.counts().dropped > dropped0, 'the relay dropped nothing in the outage');
  console.log(
    `PASS 2. websocket and media cut for ${WS_OUTAGE_MS} ms: resumed with media held, connected ${report.resumeConnectedAfterMs} ms after the cut; ` +
      `same subscribe connection, server ufrag ${later.sub.remoteUfrag} → ${final.sub.remoteUfrag}, program frames ${later.frames} → ${final.frames}, ` +
      `metric ${restartsAfter} → ${restartsFinal}`,
  );

  // 3. A delegate without a camera ("No camera (audio only)" in the device check): its sending
  // connection has no simulcast, so it restarts ICE in place (`restartIce()` and a new
  // `publish` offer on the same connection). Its audio, given the floor, must reach the room
  // again on the same slot after a cut.
  const mod = await open(srv.links.ice.moderator, 'moderator');
  const audioId = 'nodir-audio-only';
  const roomAudio = async () => {
    const st = await room.page.evaluate(() => /** @type {any} */ (window).__rt.stats());
    return st.inbound.find((x) => x.kind === 'audio' && x.slot?.slot === 'track' && x.slot.participant === audioId)?.bytesReceived ?? 0;
  };
  const flowsBefore = new Set(relay.counts().flows.map((f) => f.port));
  del2 = await open(srv.invite('delegate', 'Nodir Aliev', 'UZ', 'ice', audioId), 'delegate-audio');
  await del2.page.waitForSelector('#join');
  await until('device check ready (audio only)', () => del2.page.evaluate(() => !!document.querySelector('#preview')?.srcObject), 10000);
  await del2.page.selectOption('#cam-select', '');
  await until('the device check has the microphone only', () => del2.page.evaluate(() => {
    const s = /** @type {MediaStream | null} */ (document.querySelector('#preview')?.srcObject ?? null);
    return !!s && s.getVideoTracks().length === 0 && s.getAudioTracks().length === 1;
  }), 10000);
  await del2.page.click('#join');
  await del2.page.waitForSelector('#meeting:not(.hidden)');
  await watch(del2.page);
  await until('the moderator console is connected', () => mod.page.evaluate(() => /** @type {any} */ (window).__rt?.conn?.state === 'open'), 10000);
  const given = await mod.page.evaluate((p) => /** @type {any} */ (window).__rt.cmd('give_floor', { participant: p }), audioId);
  assert(given?.type === 'ack', `give_floor: ${JSON.stringify(given)}`);
  const a0 = await until('the audio-only delegate is heard in the room, through the relay', async () => {
    const x = await info(del2.page);
    const bytes = await roomAudio();
    return x.state === 'connected' && x.pub?.pair?.remote.startsWith('127.0.0.2:') && !x.pub.tag && bytes > 2000 && { x, bytes };
  }, 25000);
  assert(a0.x.videoSent === 0, 'the audio-only delegate sends video');
  const simulcast = await del2.page.evaluate(() => /** @type {any} */ (window).__rt.media.publisher.simulcast);
  assert(simulcast === false, 'the audio-only publisher is simulcast');
  await del2.page.evaluate(() => {
    /** @type {any} */ (window).__rt.media.publisher.pc.__tag = 'the publisher before';
  });
  const pubCut = relay.counts().flows.map((f) => f.port).filter((p) => !flowsBefore.has(p));
  assert(pubCut.length > 0, 'no new relay flows for the audio-only delegate');
  const restarts3 = await metric('roundtable_ice_restarts_total');
  const t2 = Date.now();
  relay.blackout(pubCut, BLACKOUT_MS);
  await until('the audio-only delegate sees its media reconnecting', async () => seen(await info(del2.page), 'reconnecting', t2) !== null, BLACKOUT_MS + 5000, 200);
  const atRestart = await roomAudio();
  const audioBack = await until('its audio reaches the room again by an ICE restart', async () => {
    const x = await info(del2.page);
    const bytes = await roomAudio();
    return x.state === 'connected' && x.iceRestarts >= 1 && x.pub?.ice === 'connected' && x.pub.localUfrag !== a0.x.pub.localUfrag && bytes > atRestart + 2000 && { x, bytes };
  }, BLACKOUT_MS + 30000, 250);
  report.audioOnlyConnectedAfterMs = Date.now() - t2;
  await new Promise((r) => setTimeout(r, 2000));
  const audioLater = await roomAudio();
  const p3 = await info(del2.page);
  report.audioOnly = { before: a0, atRestart, back: audioBack, later: audioLater, final: p3 };
  assert(p3.pub.tag === 'the publisher before', 'the sending connection was replaced, not restarted');
  assert(p3.joins === a0.x.joins, `the audio-only page rejoined (joins ${a0.x.joins} → ${p3.joins})`);
  assert(audioLater > audioBack.bytes, `the room's audio from the delegate stopped after the restart (${audioBack.bytes} → ${audioLater})`);
  assert(p3.pub.remoteUfrag !== a0.x.pub.remoteUfrag, `the server's ufrag on the sending connection did not change (${p3.pub.remoteUfrag})`);
  console.log(
    `PASS 3. an audio-only sending connection restarted ICE in place: connected ${report.audioOnlyConnectedAfterMs} ms after the cut (${BLACKOUT_MS} ms); ` +
      `same connection, ufrags ${a0.x.pub.localUfrag}/${a0.x.pub.remoteUfrag} → ${p3.pub.localUfrag}/${p3.pub.remoteUfrag}, ` +
      `room audio from it ${atRestart} → ${audioLater} bytes, metric ${restarts3} → ${await metric('roundtable_ice_restarts_total')}`,
  );

  // 4. The ICE restart cannot work: every flow of the delegate's machine is cut, new ones too,
  // for FULL_OUTAGE_MS (longer than the restart's 10 s). The page must give the restart up
  // (media `failed`), reconnect in full (a new join, new peer connections) and decode the
  // room's frames again once the network is back.
  await del2.ctx.close();
  del2 = undefined;
  await mod.ctx.close();
  const f0 = await info(del.page);
  const t3 = Date.now();
  relay.blackoutAllBut(roomPorts, FULL_OUTAGE_MS);
  await until('the delegate gives the ICE restart up', async () => (await info(del.page)).states.some(([s, , at]) => s === 'failed' && at >= t3), FULL_OUTAGE_MS + 20000, 250);
  report.fullFailedAfterMs = Date.now() - t3;
  const full = await until('media back by a full reconnect', async () => {
    const x = await info(del.page);
    return x.joins > f0.joins && x.state === 'connected' && x.sub?.ice === 'connected' && x.sub.tag !== 'the subscriber before' && x.frames > 10 && x;
  }, FULL_OUTAGE_MS + 40000, 250);
  report.fullConnectedAfterMs = Date.now() - t3;
  assert(report.fullConnectedAfterMs > FULL_OUTAGE_MS, `connected ${report.fullConnectedAfterMs} ms after the cut, before the network came back (${FULL_OUTAGE_MS} ms)`);
  // The room's picture goes on: 20 more frames (about a second of video). Once, in CI, it
  // stood still for over 2 s after 12 frames (the server's health saw it too: "the client
  // decodes no video frames"); the bound is 15 s, and how long it took is reported, with what
  // arrived meanwhile, so that a freeze is told from a stop.
  const plis0 = await metric('roundtable_plis_sent_total');
  const tf = Date.now();
  /** @type {any} */
  let f2;
  try {
    f2 = await until('the room\'s frames to go on after the full reconnect', async () => {
      const x = await info(del.page);
      return x.frames >= full.frames + 20 && x;
    }, 15000, 250);
  } catch {
    const x = await info(del.page);
    report.full = { before: f0, back: full, later: x };
    throw new Error(
      `frames stopped after the full reconnect (${full.frames} → ${x.frames} in 15 s; program video packets ` +
        `${full.video?.packets} → ${x.video?.packets}, lost ${x.video?.lost}; server PLIs ${plis0} → ${await metric('roundtable_plis_sent_total')})`,
    );
  }
  report.fullFramesGoOnMs = Date.now() - tf;
  report.full = { before: f0, back: full, later: f2 };
  assert(f2.videoSent > 0, 'the camera sends nothing after the full reconnect');
  const statesAfter = f2.states.filter(([, , at]) => at >= t3).map(([s]) => s).filter((s) => !/ ice /.test(s));
  ok = true;
  console.log(
    `PASS 4. no network for ${FULL_OUTAGE_MS} ms: the ICE restart given up ${report.fullFailedAfterMs} ms after the cut, ` +
      `a full reconnect (joins ${f0.joins} → ${f2.joins}, a new subscribe connection), connected ${report.fullConnectedAfterMs} ms after the cut, ` +
      `frames ${full.frames} → ${f2.frames} (20 more within ${report.fullFramesGoOnMs} ms); media states ${[...new Set(statesAfter)].join(' → ')}`,
  );
  void room;
} catch (e) {
  console.log(`FAIL ICE restart: ${e?.message ?? e}`);
  report.relay = relay.counts();
  if (del2) report.failedAt2 = await Promise.race([info(del2.page).catch((x) => String(x)), new Promise((r) => setTimeout(() => r('no answer'), 3000))]);
  report.failedAt = await Promise.race([info(del.page).catch((x) => String(x)), new Promise((r) => setTimeout(() => r('no answer'), 3000))]);
  report.error = String(e?.stack ?? e);
} finally {
  writeFileSync(join(ARTIFACTS, 'ice-restart.json'), JSON.stringify(report, null, 2));
  writeFileSync(join(ARTIFACTS, 'ice-restart-console.log'), consoleLog.join('\n'));
  await browser.close().catch(() => {});
  writeFileSync(join(ARTIFACTS, 'ice-restart-server.log'), srv.log());
  await srv.stop();
  relay.close();
}
process.exit(ok ? 0 : 1);
