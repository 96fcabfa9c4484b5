// A UDP relay that stands in for the network between the browsers and the server's media
// port, so a test can cut it: the server advertises the relay's address (advertise_ip), the
// relay forwards each browser's flow from a socket of its own (as a NAT would), and
// `blackout` drops a flow's packets both ways for a while, as a Wi-Fi drop does.
import { createSocket } from 'node:dgram';

/**
 * A UDP port free on `host` now.
 * @param {string} host
 * @returns {Promise<number>}
 */
export function freeUdpPort(host = '127.0.0.1') {
  return new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.once('error', rej);
    s.bind(0, host, () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/**
 * Listens on `listen` (host:port) and forwards to `target`.
 * @param {{host: string, port: number}} listen
 * @param {{host: string, port: number}} target
 */
export async function startRelay(listen, target) {
  const front = createSocket('udp4');
  /** @type {Map<string, {back: import('node:dgram').Socket, port: number, host: string, toServer: number, toBrowser: number}>} */
  const flows = new Map();
  /** @type {Map<number, number>} browser port → dropped until (ms) */
  const cut = new Map();
  let dropped = 0;
  /** Every flow but these browser ports, new ones included, is dropped until `until`. */
  let all = { until: 0, keep: new Set() };
  const isCut = (/** @type {number} */ port) => (cut.get(port) ?? 0) > Date.now() || (all.until > Date.now() && !all.keep.has(port));
  front.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let f = flows.get(key);
    if (!f) {
      const back = createSocket('udp4');
      const flow = { back, port: rinfo.port, host: rinfo.address, toServer: 0, toBrowser: 0 };
      back.on('message', (m) => {
        if (isCut(flow.port)) {
          dropped++;
          return;
        }
        flow.toBrowser++;
        front.send(m, flow.port, flow.host);
      });
      back.bind(0, '127.0.0.1');
      flows.set(key, flow);
      f = flow;
    }
    if (isCut(f.port)) {
      dropped++;
      return;
    }
    f.toServer++;
    f.back.send(msg, target.port, target.host);
  });
  await new Promise((res, rej) => {
    front.once('error', rej);
    front.bind(listen.port, listen.host, () => res(undefined));
  });
  return {
    /** Drops every packet of the flows from these browser ports, both ways, for `ms`. */
    blackout(/** @type {number[]} */ ports, /** @type {number} */ ms) {
      for (const p of ports) cut.set(p, Date.now() + ms);
    },
    /**
     * Drops every flow but those from these browser ports, flows that start meanwhile
     * included, both ways, for `ms`: the whole network of one machine gone.
     */
    blackoutAllBut(/** @type {Iterable<number>} */ keep, /** @type {number} */ ms) {
      all = { until: Date.now() + ms, keep: new Set(keep) };
    },
    /** Packets forwarded per flow, and dropped in all. */
    counts() {
      return {
        flows: [...flows.values()].map((f) => ({ port: f.port, toServer: f.toServer, toBrowser: f.toBrowser })),
        dropped,
      };
    },
    close() {
      front.close();
      for (const f of flows.values()) f.back.close();
    },
  };
}
