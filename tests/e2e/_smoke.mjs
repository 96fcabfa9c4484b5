import { startServer, launch, until } from '/work/wt-web/tests/e2e/lib.mjs';
const meeting = `[[meeting]]
id = "m1"
title = "Smoke"
[[meeting.agenda]]
kind = "dialogue"
title = "Dialogue"
minutes = 10
`;
const srv = await startServer(meeting, { debug: !!process.env.DEBUG });
console.log(srv.links);
const browser = await launch();
try {
  const roomCtx = await browser.newContext();
  const room = await roomCtx.newPage();
  room.on('console', (m) => console.log('[room]', m.type(), m.text()));
  room.on('pageerror', (e) => console.log('[room] pageerror', e.message));
  await room.goto(srv.links.m1.room);
  const dCtx = await browser.newContext();
  const d = await dCtx.newPage();
  d.on('console', (m) => console.log('[del]', m.type(), m.text()));
  d.on('pageerror', (e) => console.log('[del] pageerror', e.message));
  await d.goto(srv.links.m1.delegate);
  for (let i = 0; i < (+process.env.N || 8); i++) {
    await new Promise((r) => setTimeout(r, +process.env.EVERY || 1000));
    const rs = await room.evaluate(() => window.__rt.stats && window.__rt.stats().then(s => JSON.stringify({in: s.inbound.map(x=>[x.mid,x.kind,x.slot?.slot,x.bytesReceived,x.framesDecoded]), out: s.outbound.map(x=>[x.kind,x.rid,x.bytesSent,x.frameHeight])})));
    const ds = await d.evaluate(() => window.__rt.stats && window.__rt.stats().then(s => JSON.stringify({in: s.inbound.map(x=>[x.mid,x.kind,x.slot?.slot,x.slot?.participant,x.bytesReceived,x.framesDecoded, x.frameHeight])})));
    const probe = await room.evaluate(() => window.__rt.media.publisher.pc.getStats().then(r => { const o=[]; r.forEach(s => { if (s.type==='outbound-rtp' && s.kind==='video') o.push([s.rid, s.active, s.qualityLimitationReason, s.frameHeight, s.framesPerSecond, s.targetBitrate]); if (s.type==='candidate-pair' && s.nominated) o.push(['bwe', s.availableOutgoingBitrate]); }); return JSON.stringify(o); }));
    console.log('probe', probe);
    const st = await d.evaluate(() => [window.__rt.conn.state, window.__rt.media.state]);
    console.log(i, 'room', rs, '\n  del', ds, st);
  }
  await d.screenshot({ path: '/tmp/del.png' });
  await room.screenshot({ path: '/tmp/room.png' });
} finally {
  await browser.close();
  srv.saveLog();
  await srv.stop();
}
