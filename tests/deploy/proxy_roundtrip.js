'use strict';
// Sends COUNT messages through the proxy (RocketMQ 5 gRPC, the unmodified
// rocketmq-client-nodejs client) and receives them back through it with a
// SimpleConsumer, acking each. Exits 0 only when every body sent came back.
// Env: PROXY_ENDPOINT (host:port), TOPIC, GROUP, COUNT.
const { Producer, SimpleConsumer, FilterExpression } = require('rocketmq-client-nodejs');

const endpoints = process.env.PROXY_ENDPOINT;
const topic = process.env.TOPIC;
const group = process.env.GROUP;
const count = Number(process.env.COUNT || 6);
const quiet = { info() {}, warn() {}, error() {}, debug() {}, close() {} };

async function main() {
  const p = new Producer({ endpoints, topics: [ topic ], logger: quiet, requestTimeout: 5000 });
  await p.startup();
  const want = new Set();
  for (let i = 0; i < count; i++) {
    const body = `px-${i}-${process.pid}`;
    const r = await p.send({ topic, body: Buffer.from(body) });
    if (!r || !r.messageId) throw new Error(`send ${body}: no message id`);
    want.add(body);
  }
  await p.shutdown();
  console.log(`sent ${count} messages through ${endpoints}`);

  const c = new SimpleConsumer({
    endpoints, consumerGroup: group, logger: quiet, awaitDuration: 2000, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, new FilterExpression('*') ] ]),
  });
  await c.startup();
  const end = Date.now() + 30000;
  while (want.size > 0 && Date.now() < end) {
    const msgs = await c.receive(16, 10000);
    for (const m of msgs) {
      const body = m.body.toString();
      if (want.delete(body)) console.log(`received ${body}`);
      await c.ack(m);
    }
  }
  await c.shutdown();
  if (want.size > 0) {
    console.error(`not received through the proxy: ${[ ...want ].join(' ')}`);
    process.exit(1);
  }
  console.log(`received all ${count} messages through the proxy`);
  process.exit(0);
}

main().catch(e => { console.error(`proxy round trip failed: ${e && e.stack || e}`); process.exit(1); });
