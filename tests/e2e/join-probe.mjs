// Diagnostic for the join-time finding (not part of run.mjs): a room, then 4 delegates joining
// one after another; prints each one's milestones (ms since navigation), the subscriber's
// inbound video (PLIs sent, packets, keyframes) and the room's outbound per layer (PLIs
// received, keyframes encoded).
//   ROUNDTABLE_BIN=target/release/roundtable node tests/e2e/join-probe.mjs
import { startServer, launch, until } from './lib.mjs';
const srv = await startServer(`[[meeting]]
id = "dlg"
title = "x"
[[meeting.agenda]]
kind = "dialogue"
title = "D"
minutes = 10
`, { debug: !!process.env.DEBUG });
const browser = await launch();
const room = await (await browser.newContext()).newPage();
await room.goto(srv.links.dlg.room);
await new Promise(r => setTimeout(r, 3000));
for (let i = 0; i < 4; i++) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(srv.invite('delegate', `J ${i}`, 'x', 'dlg'));
  let first;
  await until('frame', async () => {
    const s = await page.evaluate(() => window.__rt?.stats ? window.__rt.stats() : {inbound: []});
    const v = s.inbound.find(x => x.kind === 'video' && x.slot?.source === 'program');
    return v && v.framesDecoded > 0;
  }, 20000, 20);
  const total = Date.now() - t0;
  console.log('sub in', await page.evaluate(() => window.__rt.media.subscriber.pc.getStats().then(r => { const o=[]; r.forEach(s => { if (s.type==='inbound-rtp' && s.kind==='video') o.push({mid: s.mid, pli: s.pliCount, nack: s.nackCount, fir: s.firCount, kf: s.keyFramesDecoded, fr: s.framesReceived, fd: s.framesDecoded, pk: s.packetsReceived, h: s.frameHeight}); }); return JSON.stringify(o); })));
  const marks = await page.evaluate(() => ({...window.__rt.conn.marks, nav: Math.round(performance.now())}));
  const st = await page.evaluate(() => window.__rt.stats().then(s => s.inbound.map(x=>[x.mid,x.kind,x.bytesReceived,x.packetsReceived,x.framesDecoded])));
  const pl = await room.evaluate(() => window.__rt.media.publisher.pc.getStats().then(r => { const o=[]; r.forEach(s => { if (s.type==='outbound-rtp' && s.kind==='video') o.push([s.rid, s.pliCount, s.firCount, s.nackCount, s.keyFramesEncoded, s.framesEncoded, s.frameHeight]); }); return JSON.stringify(o); }));
  console.log('room out', pl, await page.evaluate(() => JSON.stringify({cur: [...window.__rt.media.subscriber.current], toasts: [...document.querySelectorAll('.toast')].map(t=>t.textContent)})));
  console.log(i, total, JSON.stringify(marks), JSON.stringify(st));
  await ctx.close();
}
await browser.close();
srv.saveLog();
await srv.stop();
