// An MQTT-over-QUIC client that behaves like NanoMQ's QUIC bridge under QoS 0 load
// (mqtt-over-quic.md 2.1, 3.1): CONNECT on stream 0, QoS 0 PUBLISH on data streams 12 and 16,
// never a PINGREQ. Built on @matrixai/quic (quiche) and mqtt-packet (MQTT.js's codec), so
// nothing of qbridge is on this side.
//
//   node nanomq_like_client.mjs --port P --ca CA [--server-name N] [--keepalive S]
//        [--seconds S] [--proto 4|5] [--interval-ms M]
//
// Runs for --seconds, then prints one JSON line:
//   {"connack": 0, "published": N, "closed": false, "closedAfterMs": null,
//    "disconnectReason": null, "appError": null}
// and exits 0 (the test decides what the figures mean); 2 on a setup failure.
import { QUICClient, events } from '@matrixai/quic';
import mqtt from 'mqtt-packet';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';

const opt = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
const seconds = Number(opt.seconds ?? 10);
const keepalive = Number(opt.keepalive ?? 1);
const protocolVersion = Number(opt.proto ?? 4);
const intervalMs = Number(opt['interval-ms'] ?? 100);

const result = {
  connack: null, published: 0, closed: false, closedAfterMs: null,
  disconnectReason: null, appError: null,
};
let connectedAt = 0;
const finish = () => {
  console.log(JSON.stringify(result));
  process.exit(0);
};

async function main() {
  const client = await QUICClient.createQUICClient({
    host: '127.0.0.1',
    port: Number(opt.port),
    serverName: opt['server-name'] ?? 'localhost',
    crypto: { ops: { randomBytes: async (d) => { randomFillSync(new Uint8Array(d)); } } },
    config: {
      ca: fs.readFileSync(opt.ca, 'utf8'),
      verifyPeer: true,
      applicationProtos: ['mqtt'],
      maxIdleTimeout: 60000,
    },
  });
  const conn = client.connection;
  conn.addEventListener(events.EventQUICConnectionClose.name, (e) => {
    if (!result.closed) {
      result.closed = true;
      result.closedAfterMs = connectedAt ? Date.now() - connectedAt : null;
      const code = e.detail?.data?.errorCode ?? e.detail?.errorCode;
      if (code !== undefined) result.appError = Number(code);
    }
  }, { once: true });

  // Stream 0: CONNECT, then read CONNACK (and whatever DISCONNECT follows).
  const control = conn.newStream('bidi');
  const parser = mqtt.parser({ protocolVersion });
  parser.on('packet', (p) => {
    if (p.cmd === 'connack') {
      result.connack = protocolVersion === 5 ? p.reasonCode : p.returnCode;
      connectedAt = Date.now();
    } else if (p.cmd === 'disconnect') {
      result.disconnectReason = p.reasonCode ?? 0;
    }
  });
  (async () => {
    try {
      for await (const part of control.readable) parser.parse(Buffer.from(part));
    } catch { /* the connection closed */ }
  })();
  const cw = control.writable.getWriter();
  await cw.write(mqtt.generate({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, keepalive,
    clientId: 'nanomq-like',
  }));

  // Data streams 4 and 8 are opened and left idle, so the publishing ones are 12 and 16 as
  // in the field reports.
  for (let i = 0; i < 2; ++i) conn.newStream('bidi');
  const data = [conn.newStream('bidi'), conn.newStream('bidi')].map((s) => s.writable.getWriter());
  const payload = Buffer.alloc(64, 0x61);
  const timer = setInterval(async () => {
    if (result.closed || result.connack === null) return;
    const w = data[result.published % 2];
    result.published += 1;
    try {
      await w.write(mqtt.generate({
        cmd: 'publish', topic: 'nano/up', payload, qos: 0, retain: false, dup: false,
      }, { protocolVersion }));
    } catch { /* closed under us */ }
  }, intervalMs);
  setTimeout(async () => {
    clearInterval(timer);
    finish();
  }, seconds * 1000);
}

main().catch((err) => {
  console.error(`nanomq_like_client: ${err?.stack ?? err}`);
  process.exit(2);
});
