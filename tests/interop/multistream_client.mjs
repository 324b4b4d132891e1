// EMQX's multi-stream model checked from an independent stack (@matrixai/quic + mqtt-packet):
//   stream 0: CONNECT (5.0) -> CONNACK
//   stream 4: SUBSCRIBE ms/# -> SUBACK here; deliveries for it arrive here
//   stream 8: PUBLISH ms/x QoS 1 -> PUBACK here (the ack travels on the PUBLISH's stream)
//   stream 12: UNSUBSCRIBE ms/# -> UNSUBACK 0x11 (the subscription belongs to stream 4)
//
//   node multistream_client.mjs --port P --ca CA [--server-name N]
// Prints one JSON line with what arrived on which stream; exits 0 (the test judges), 2 on a
// setup failure, 3 after 20 s.
import { QUICClient } from '@matrixai/quic';
import mqtt from 'mqtt-packet';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';

const opt = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
setTimeout(() => { console.log(JSON.stringify({ timeout: true, seen })); process.exit(3); }, 20000).unref();

const seen = {};  // stream id -> [packet summaries]
const v5 = { protocolVersion: 5 };

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
      maxIdleTimeout: 30000,
    },
  });
  const conn = client.connection;
  const waiters = [];
  const open = (id) => {
    const s = conn.newStream('bidi');
    const parser = mqtt.parser(v5);
    seen[id] = [];
    parser.on('packet', (p) => {
      const e = { cmd: p.cmd };
      if (p.reasonCode !== undefined) e.reasonCode = p.reasonCode;
      if (p.granted) e.granted = p.granted;
      if (p.topic) e.topic = p.topic;
      if (p.payload && p.cmd === 'publish') e.payload = p.payload.toString();
      seen[id].push(e);
      for (const w of waiters.splice(0)) w();
    });
    (async () => {
      try { for await (const part of s.readable) parser.parse(Buffer.from(part)); } catch { }
    })();
    const w = s.writable.getWriter();
    return (packet) => w.write(mqtt.generate(packet, v5));
  };
  const until = async (pred) => { while (!pred()) await new Promise((r) => waiters.push(r)); };

  const s0 = open(0);
  await s0({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 30,
             clientId: 'multistream' });
  await until(() => seen[0].some((p) => p.cmd === 'connack'));
  const s4 = open(4);
  const s8 = open(8);
  const s12 = open(12);
  await s4({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'ms/#', qos: 1 }] });
  await until(() => seen[4].some((p) => p.cmd === 'suback'));
  await s8({ cmd: 'publish', topic: 'ms/x', payload: 'hello', qos: 1, messageId: 7, retain: false, dup: false });
  await until(() => seen[8].some((p) => p.cmd === 'puback') && seen[4].some((p) => p.cmd === 'publish'));
  await s12({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['ms/#'] });
  await until(() => seen[12].some((p) => p.cmd === 'unsuback'));
  console.log(JSON.stringify({ seen }));
  await client.destroy({ force: true });
  process.exit(0);
}

main().catch((err) => {
  console.error(`multistream_client: ${err?.stack ?? err}`);
  process.exit(2);
});
