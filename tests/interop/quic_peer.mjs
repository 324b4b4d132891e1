// An independent QUIC peer for qbridge's interop tests: @matrixai/quic (Cloudflare's
// quiche via napi-rs), ALPN "mqtt", certificates verified.
//
//   node quic_peer.mjs server --cert C --key K [--seconds N]
//     prints {"port": P} once listening; echoes every bidirectional stream it is given.
//   node quic_peer.mjs client --port P --ca CA --server-name NAME [--bytes N] [--seconds N]
//     opens one bidirectional stream, sends N pattern bytes and FIN, reads the echo,
//     prints {"ok": true|false, "sent": N, "received": M} and exits 0 only if every byte
//     came back. Both modes exit on their own after --seconds (default 60).
import { QUICServer, QUICClient, events } from '@matrixai/quic';
import { createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';

const [mode, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
const seconds = Number(opt.seconds ?? 60);
setTimeout(() => {
  console.error(`quic_peer: ${mode} gave up after ${seconds}s`);
  process.exit(3);
}, seconds * 1000).unref();

const pattern = (i) => (i * 7 + (i >> 13)) & 0xff;

const serverCrypto = {
  key: randomFillSync(new Uint8Array(32)).buffer,
  ops: {
    sign: async (key, data) => {
      const mac = createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest();
      return mac.buffer.slice(mac.byteOffset, mac.byteOffset + mac.byteLength);
    },
    verify: async (key, data, sig) => {
      const mac = createHmac('sha256', Buffer.from(key)).update(Buffer.from(data)).digest();
      const s = Buffer.from(sig);
      return s.length === mac.length && timingSafeEqual(s, mac);
    },
  },
};
const clientCrypto = {
  ops: { randomBytes: async (data) => { randomFillSync(new Uint8Array(data)); } },
};

async function server() {
  const s = new QUICServer({
    crypto: serverCrypto,
    config: {
      key: fs.readFileSync(opt.key, 'utf8'),
      cert: fs.readFileSync(opt.cert, 'utf8'),
      verifyPeer: false,
      applicationProtos: ['mqtt'],
      maxIdleTimeout: 30000,
    },
  });
  s.addEventListener(events.EventQUICServerConnection.name, (evt) => {
    const conn = evt.detail;
    conn.addEventListener(events.EventQUICConnectionStream.name, (e) => {
      const stream = e.detail;
      stream.readable.pipeTo(stream.writable).catch((err) => {
        console.error(`quic_peer: echo failed: ${err}`);
      });
    });
  });
  await s.start({ host: '127.0.0.1', port: 0 });
  console.log(JSON.stringify({ port: s.port }));
  // Run until killed (the test does) or --seconds.
  await new Promise((resolve) => process.on('SIGTERM', resolve));
  await s.stop({ force: true });
  process.exit(0);
}

async function client() {
  const total = Number(opt.bytes ?? 10 * 1024 * 1024);
  const c = await QUICClient.createQUICClient({
    host: opt.host ?? '127.0.0.1',
    port: Number(opt.port),
    serverName: opt['server-name'] ?? 'localhost',
    crypto: clientCrypto,
    config: {
      ca: fs.readFileSync(opt.ca, 'utf8'),
      verifyPeer: true,
      applicationProtos: ['mqtt'],
      maxIdleTimeout: 30000,
    },
  });
  const expected = Buffer.alloc(total);
  for (let i = 0; i < total; ++i) expected[i] = pattern(i);
  const stream = c.connection.newStream('bidi');
  const writing = (async () => {
    const w = stream.writable.getWriter();
    const chunk = 64 * 1024;
    for (let off = 0; off < total; off += chunk) {
      await w.write(expected.subarray(off, Math.min(total, off + chunk)));
    }
    await w.close();
  })();
  const parts = [];
  let received = 0;
  for await (const part of stream.readable) {
    parts.push(Buffer.from(part));
    received += part.length;
  }
  await writing;
  const ok = received === total && Buffer.concat(parts).equals(expected);
  console.log(JSON.stringify({ ok, sent: total, received }));
  await c.destroy({ force: true });
  process.exit(ok ? 0 : 1);
}

(mode === 'server' ? server() : mode === 'client' ? client() : Promise.reject(new Error('mode?')))
  .catch((err) => {
    console.error(`quic_peer: ${err?.stack ?? err}`);
    process.exit(2);
  });
