// Helpers for the browser tests: a real server on a temp config, real Chromium.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = resolve(ROOT, process.env.ROUNDTABLE_BIN ?? 'target/release/roundtable');
export const ARTIFACTS = resolve(ROOT, 'target/e2e-artifacts');

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {any} */ (s.address());
      s.close(() => res(port));
    });
  });
}

/**
 * Starts the server on a config built from `meetingsToml` (the [[meeting]] tables).
 * `media`: the [media] table's lines after `enabled` (default: loopback, any port).
 * @param {string} meetingsToml
 */
export async function startServer(meetingsToml, { debug = false, media = 'udp = "127.0.0.1:0"' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'rt-e2e-'));
  const port = await freePort();
  const config = `[server]
listen = "127.0.0.1:${port}"
data_dir = "${join(dir, 'data')}"
commands_per_second = 100
command_burst = 200

[media]
enabled = true
${media}

${meetingsToml}
`;
  const configPath = join(dir, 'config.toml');
  writeFileSync(configPath, config);
  // The pages the binary embeds (what users get); ROUNDTABLE_WEB_DIR=web serves them from disk.
  const env = { ...process.env, RUST_LOG: debug ? 'debug' : (process.env.RUST_LOG ?? 'info') };
  const logPath = join(dir, 'server.log');
  const proc = spawn(BIN, ['--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const log = [];
  const links = {};
  let current = null;
  const ready = new Promise((res, rej) => {
    const onData = (b) => {
      const text = b.toString();
      out += text;
      log.push(text);
      for (const line of text.split('\n')) {
        const m = line.match(/^Meeting "([^"]+)"/);
        if (m) {
          current = m[1];
          links[current] = {};
        }
        const l = line.match(/^\s+(\w+)\s+(http:\/\/\S+)/);
        if (l && current) links[current][l[1]] = l[2];
        if (/^More invites/.test(line)) res();
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', (b) => log.push(b.toString()));
    proc.once('exit', (code) => rej(new Error(`server exited with ${code}:\n${out}`)));
    setTimeout(() => rej(new Error(`server did not print its links in 15 s:\n${out}`)), 15000);
  });
  await ready;
  return {
    proc,
    dir,
    port,
    base: `http://127.0.0.1:${port}`,
    links,
    configPath,
    log: () => log.join(''),
    saveLog() {
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, 'server.log'), log.join(''));
    },
    /**
     * Mints an invite with the CLI (same config and data dir, so the same secret).
     * `opts.once`: a one-time link.
     */
    invite(role, name, delegation = '', meeting, participant, opts = {}) {
      const args = ['--config', configPath, 'invite', '--role', role, '--name', name];
      if (delegation) args.push('--delegation', delegation);
      if (meeting) args.push('--meeting', meeting);
      if (participant) args.push('--participant', participant);
      if (opts.once) args.push('--once');
      const text = execFileSync(BIN, args, { env }).toString();
      const m = text.match(/http:\/\/\S+/);
      if (!m) throw new Error(`invite printed no link: ${text}`);
      return m[0];
    },
    async stop() {
      if (proc.exitCode !== null) return;
      proc.kill('SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => {
          proc.kill('SIGKILL');
          r();
        }, 6000);
        proc.once('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    },
  };
}

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export async function launch() {
  const { chromium } = await import('playwright-core');
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  // Playwright gives every launch a new empty user-data-dir of its own.
  return chromium.launch({
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS.filter((a) => a !== '--headless'),
  });
}

/** Polls `fn` until it returns a truthy value; throws with `what` after `ms`. */
export async function until(what, fn, ms = 10000, every = 100) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : last !== undefined ? ` (last: ${JSON.stringify(last)})` : ''}`);
}

export function readJson(p) {
  return JSON.parse(readFileSync(p, 'utf8'));
}
