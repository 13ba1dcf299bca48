'use strict';
// Compatibility test: the unmodified RocketMQ 5.x Node.js client
// (rocketmq-client-nodejs, gRPC) against our nameserver + broker + proxy,
// started by run-v5.sh. Topics and groups are created on the broker with
// plain remoting requests (RocketMQ's admin wire format), the rest goes
// through the proxy only. Each case fails with a message naming what the
// cluster did not do; none passes without the expected messages.
const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const { spawn } = require('node:child_process');
const {
  Producer, SimpleConsumer, PushConsumer, FilterExpression, ConsumeResult,
} = require('rocketmq-client-nodejs');
const { TransactionResolution } = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const ENDPOINT = process.env.PROXY_ENDPOINT;
const BROKER = process.env.BROKER_ADDR;
const NAMESRV = process.env.NAMESRV_ADDR;
const quiet = { info() {}, warn() {}, error() {}, debug() {}, close() {} };
const sleep = ms => new Promise(r => setTimeout(r, ms));
const uniq = p => `${p}_${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;

// One remoting request (JSON serialization) to addr; resolves the response.
let opaque = 1;
function remoting(addr, code, ext, body) {
  const [ host, port ] = addr.split(':');
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    const header = Buffer.from(JSON.stringify({
      code, language: 'JAVA', version: 413, opaque: opaque++, flag: 0, extFields: ext || {},
    }));
    const b = body ? Buffer.from(body) : Buffer.alloc(0);
    const pre = Buffer.alloc(8);
    pre.writeInt32BE(4 + header.length + b.length, 0);
    pre.writeInt32BE(header.length, 4);
    let acc = Buffer.alloc(0);
    sock.setTimeout(5000, () => { sock.destroy(); reject(new Error(`remoting ${code} to ${addr} timed out`)); });
    sock.on('error', reject);
    sock.on('data', d => {
      acc = Buffer.concat([ acc, d ]);
      if (acc.length < 4) return;
      const len = acc.readInt32BE(0);
      if (acc.length < 4 + len) return;
      const hl = acc.readInt32BE(4) & 0xffffff;
      const h = JSON.parse(acc.subarray(8, 8 + hl).toString());
      sock.end();
      resolve({ code: h.code, remark: h.remark, ext: h.extFields || {}, body: acc.subarray(8 + hl, 4 + len) });
    });
    sock.write(Buffer.concat([ pre, header, b ]));
  });
}

async function createTopic(topic, queues = 4) {
  const r = await remoting(BROKER, 17, {
    topic, defaultTopic: 'TBW102', readQueueNums: String(queues), writeQueueNums: String(queues),
    perm: '6', topicFilterType: 'SINGLE_TAG', topicSysFlag: '0', order: 'false',
  });
  assert.strictEqual(r.code, 0, `broker refused to create topic ${topic}: ${r.remark}`);
  const end = Date.now() + 20000;
  for (;;) {
    const rr = await remoting(NAMESRV, 105, { topic });
    if (rr.code === 0) return;
    if (Date.now() > end) throw new Error(`topic ${topic} never reached the nameserver`);
    await sleep(200);
  }
}

async function createGroup(group, { orderly = false, retryMaxTimes = 16 } = {}) {
  const r = await remoting(BROKER, 200, {}, JSON.stringify({
    groupName: group, consumeEnable: true, consumeFromMinEnable: true, consumeBroadcastEnable: true,
    consumeMessageOrderly: orderly, retryQueueNums: 1, retryMaxTimes, brokerId: 0,
    whichBrokerWhenConsumeSlowly: 1, notifyConsumerIdsChangedEnable: true,
  }));
  assert.strictEqual(r.code, 0, `broker refused to create group ${group}: ${r.remark}`);
}

async function maxOffset(topic, queueId) {
  const r = await remoting(BROKER, 30, { topic, queueId: String(queueId) });
  return r.code === 0 ? Number(r.ext.offset) : -1;
}

// The group's committed offset of a queue (QUERY_CONSUMER_OFFSET): with pop
// consumption, the first offset still in flight (unacked).
async function consumerOffset(group, topic, queueId) {
  const r = await remoting(BROKER, 14, { consumerGroup: group, topic, queueId: String(queueId) });
  return r.code === 0 ? Number(r.ext.offset) : -1;
}

async function producer(topics, checker) {
  const p = new Producer({ endpoints: ENDPOINT, topics, logger: quiet, checker, requestTimeout: 5000 });
  await p.startup();
  return p;
}

async function simpleConsumer(group, topic, tag = '*', awaitDuration = 3000) {
  const c = new SimpleConsumer({
    endpoints: ENDPOINT, consumerGroup: group, logger: quiet, awaitDuration, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, new FilterExpression(tag) ] ]),
  });
  await c.startup();
  // The first receive fixes where a new group starts (the end of the queues).
  await c.receive(16, 10000);
  return c;
}

// Receives until pred(all) or timeout; returns everything received.
async function receiveUntil(c, pred, ms, invisible = 10000, ack = true) {
  const got = [];
  const end = Date.now() + ms;
  while (!pred(got) && Date.now() < end) {
    const msgs = await c.receive(16, invisible);
    for (const m of msgs) {
      got.push(m);
      if (ack) await c.ack(m);
    }
  }
  return got;
}

test('a topic that does not exist answers TOPIC_NOT_FOUND', async () => {
  const p = await producer([]);
  try {
    await assert.rejects(p.send({ topic: uniq('NoSuchTopic'), body: Buffer.from('x') }), err => {
      assert.strictEqual(err.code, 40402, `expected TOPIC_NOT_FOUND (40402), got ${err.code}: ${err.message}`);
      return true;
    });
  } finally {
    await p.shutdown();
  }
});

test('normal, tagged and keyed messages; SimpleConsumer tag filter and ack', async () => {
  const topic = uniq('V5Normal');
  const group = uniq('GID_simple');
  // One queue: a new group starts at the end of each queue the first time it
  // pops it (ConsumeInitMode.MAX, as RocketMQ's proxy asks), so with one
  // queue the priming receive below fixes the start for everything sent after.
  await createTopic(topic, 1);
  await createGroup(group);
  const p = await producer([ topic ]);
  const c = await simpleConsumer(group, topic, 'TagA');
  try {
    const sent = [];
    for (let i = 0; i < 6; i++) {
      const tag = i % 2 ? 'TagB' : 'TagA';
      const r = await p.send({ topic, tag, keys: [ `key-${i}` ], body: Buffer.from(`body-${i}`),
        properties: new Map([ [ 'idx', String(i) ] ]) });
      assert.ok(r.messageId, 'send receipt has no message id');
      sent.push({ id: r.messageId, tag, i });
    }
    const plain = await p.send({ topic, body: Buffer.from('no tag') });
    assert.ok(plain.messageId);
    const want = sent.filter(s => s.tag === 'TagA');
    const got = await receiveUntil(c, g => g.length >= want.length, 30000);
    assert.strictEqual(got.length, want.length, `received ${got.length} TagA messages, want ${want.length}`);
    for (const m of got) {
      assert.strictEqual(m.tag, 'TagA');
      const s = want.find(w => w.id === m.messageId);
      assert.ok(s, `unexpected message ${m.messageId}`);
      assert.strictEqual(m.body.toString(), `body-${s.i}`);
      assert.deepStrictEqual(m.keys, [ `key-${s.i}` ]);
      assert.strictEqual(m.properties.get('idx'), String(s.i));
      assert.strictEqual(m.corrupted, undefined, 'body digest did not verify');
    }
    const more = await c.receive(16, 10000);
    assert.strictEqual(more.length, 0, 'acked or filtered messages were delivered again');
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('an unacked message comes back after its invisible time; changeInvisibleDuration works', async () => {
  const topic = uniq('V5Invisible');
  const group = uniq('GID_invis');
  await createTopic(topic, 1);
  await createGroup(group);
  const p = await producer([ topic ]);
  const c = await simpleConsumer(group, topic);
  try {
    const r = await p.send({ topic, body: Buffer.from('again') });
    const first = await receiveUntil(c, g => g.length >= 1, 20000, 2000, false);
    assert.strictEqual(first.length, 1, 'message was not received');
    assert.strictEqual(first[0].messageId, r.messageId);
    const t0 = Date.now();
    const second = await receiveUntil(c, g => g.length >= 1, 20000, 2000, false);
    assert.strictEqual(second.length, 1, 'unacked message did not come back');
    assert.strictEqual(second[0].messageId, r.messageId);
    assert.ok(second[0].deliveryAttempt >= 2, `delivery attempt ${second[0].deliveryAttempt}, want >= 2`);
    assert.ok(Date.now() - t0 < 15000);
    // Extend the invisibility, check it stays hidden, then ack with the new handle.
    await c.changeInvisibleDuration(second[0], 8000);
    const hidden = await c.receive(16, 2000);
    assert.strictEqual(hidden.length, 0, 'message became visible despite changeInvisibleDuration');
    await c.ack(second[0]);
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('PushConsumer consumes everything sent', async () => {
  const topic = uniq('V5Push');
  const group = uniq('GID_push');
  await createTopic(topic);
  await createGroup(group);
  const p = await producer([ topic ]);
  const seen = new Set();
  const c = new PushConsumer({
    endpoints: ENDPOINT, consumerGroup: group, logger: quiet, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, '*' ] ]),
    messageListener: { consume(m) { seen.add(m.messageId); return ConsumeResult.SUCCESS; } },
  });
  await c.startup();
  try {
    await sleep(4000);
    const ids = [];
    for (let i = 0; i < 20; i++) ids.push((await p.send({ topic, body: Buffer.from(`p${i}`) })).messageId);
    const end = Date.now() + 40000;
    while (ids.some(id => !seen.has(id)) && Date.now() < end) await sleep(200);
    const missing = ids.filter(id => !seen.has(id));
    assert.strictEqual(missing.length, 0, `${missing.length} of ${ids.length} messages never consumed`);
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('PushConsumer: a listener slower than the invisible time gets each message once, and its ack sticks', async () => {
  // run-v5.sh starts the proxy with defaultInvisibleTimeMills=3000,
  // renewAheadTimeMillis=1000 and renewSliceTimeMillis=3000: the proxy must
  // renew the receipt handles while the listener works for 6 s, and the
  // client's acks (made with the handles it got) must reach the broker with
  // the latest ones: otherwise the broker ignores them and the messages
  // stay in flight, or come back.
  const topic = uniq('V5Renew');
  const group = uniq('GID_renew');
  await createTopic(topic, 1);
  await createGroup(group);
  const p = await producer([ topic ]);
  const runs = new Map();
  let finished = 0;
  const c = new PushConsumer({
    endpoints: ENDPOINT, consumerGroup: group, logger: quiet, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, '*' ] ]),
    messageListener: {
      async consume(m) {
        runs.set(m.messageId, (runs.get(m.messageId) || 0) + 1);
        await sleep(6000);
        finished++;
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await c.startup();
  try {
    await sleep(4000);
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await p.send({ topic, body: Buffer.from(`slow${i}`) })).messageId);
    const end = Date.now() + 20000;
    while (finished < ids.length && Date.now() < end) await sleep(100);
    const missing = ids.filter(id => !runs.has(id));
    assert.strictEqual(missing.length, 0, `${missing.length} of ${ids.length} messages never consumed`);
    // An ack that missed the latest check point leaves the message to come
    // back when its last renewal runs out (at most one 3 s slice).
    await sleep(4000);
    const twice = [ ...runs ].filter(([ , n ]) => n > 1).map(([ id, n ]) => `${id} x${n}`);
    assert.deepStrictEqual(twice, [], 'messages delivered again (while being processed, or after the ack)');
    assert.strictEqual(runs.size, ids.length, `listener saw ${runs.size} messages, ${ids.length} sent`);
    const [ committed, max ] = [ await consumerOffset(group, topic, 0), await maxOffset(topic, 0) ];
    assert.strictEqual(committed, max, `group offset ${committed} of ${max}: the acks did not reach the broker`);
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('a push consumer killed while processing: the proxy hands its message to another consumer at once', async () => {
  // The proxy keeps renewing the handle while the client lives; when its
  // connection drops, the message must become visible after
  // invisibleTimeMillisWhenClear (1 s), not after hours of renewals.
  const topic = uniq('V5Gone');
  const group = uniq('GID_gone');
  await createTopic(topic, 1);
  await createGroup(group);
  const p = await producer([ topic ]);
  const child = spawn(process.execPath, [ '-e', `
    const { PushConsumer } = require('rocketmq-client-nodejs');
    const quiet = { info() {}, warn() {}, error() {}, debug() {}, close() {} };
    const c = new PushConsumer({
      endpoints: ${JSON.stringify(ENDPOINT)}, consumerGroup: ${JSON.stringify(group)}, logger: quiet,
      requestTimeout: 5000, subscriptions: new Map([ [ ${JSON.stringify(topic)}, '*' ] ]),
      messageListener: { consume(m) { console.log('GOT ' + m.messageId); return new Promise(() => {}); } },
    });
    c.startup().then(() => console.log('STARTED'));
  ` ], { stdio: [ 'ignore', 'pipe', 'inherit' ], env: process.env });
  let out = '';
  child.stdout.on('data', d => { out += d; });
  const seen = async (what, ms) => {
    const end = Date.now() + ms;
    while (!out.includes(what) && Date.now() < end) await sleep(50);
    return out.includes(what);
  };
  let c;
  try {
    assert.ok(await seen('STARTED', 15000), 'the push consumer process did not start');
    await sleep(4000);
    const r = await p.send({ topic, body: Buffer.from('held') });
    assert.ok(await seen(`GOT ${r.messageId}`, 10000), 'the push consumer never got the message');
    const got = Date.now();
    c = await simpleConsumer(group, topic);
    // Held past its first 3 s of invisibility: renewed at least once.
    await sleep(Math.max(0, 4000 - (Date.now() - got)));
    child.kill('SIGKILL');
    const t0 = Date.now();
    const again = await receiveUntil(c, g => g.length >= 1, 10000);
    assert.strictEqual(again.length, 1, 'the message of the killed consumer was not delivered again within 10 s');
    assert.strictEqual(again[0].messageId, r.messageId);
    assert.ok(Date.now() - t0 < 6000, `delivered again only after ${Date.now() - t0} ms`);
  } finally {
    child.kill('SIGKILL');
    if (c) await c.shutdown();
    await p.shutdown();
  }
});

test('FIFO: messages of one group are consumed in send order', async () => {
  const topic = uniq('V5Fifo');
  const group = uniq('GID_fifo');
  await createTopic(topic);
  await createGroup(group, { orderly: true });
  const p = await producer([ topic ]);
  const order = [];
  const c = new PushConsumer({
    endpoints: ENDPOINT, consumerGroup: group, logger: quiet, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, '*' ] ]),
    messageListener: { consume(m) { order.push(m.body.toString()); return ConsumeResult.SUCCESS; } },
  });
  await c.startup();
  try {
    await sleep(4000);
    const want = [];
    for (let i = 0; i < 15; i++) {
      const body = `g1-${i}`;
      want.push(body);
      const r = await p.send({ topic, messageGroup: 'order-1', body: Buffer.from(body) });
      assert.ok(r.messageId);
    }
    const end = Date.now() + 40000;
    while (order.length < want.length && Date.now() < end) await sleep(200);
    assert.deepStrictEqual(order.slice(0, want.length), want, 'FIFO messages were not consumed in order');
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('a message that keeps failing lands in the DLQ', async () => {
  const topic = uniq('V5Dlq');
  const group = uniq('GID_dlq');
  await createTopic(topic, 1);
  await createGroup(group, { orderly: true, retryMaxTimes: 1 });
  const p = await producer([ topic ]);
  let attempts = 0;
  const c = new PushConsumer({
    endpoints: ENDPOINT, consumerGroup: group, logger: quiet, requestTimeout: 5000,
    subscriptions: new Map([ [ topic, '*' ] ]),
    messageListener: { consume() { attempts++; return ConsumeResult.FAILURE; } },
  });
  await c.startup();
  try {
    await sleep(4000);
    await p.send({ topic, messageGroup: 'dlq', body: Buffer.from('poison') });
    const dlq = `%DLQ%${group}`;
    const end = Date.now() + 40000;
    let n = -1;
    while (Date.now() < end) {
      n = await maxOffset(dlq, 0);
      if (n >= 1) break;
      await sleep(500);
    }
    assert.ok(attempts >= 2, `listener ran ${attempts} time(s), want at least 2`);
    assert.ok(n >= 1, `dead-letter queue ${dlq} holds no message (max offset ${n})`);
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('delay message is delivered no earlier than its delivery time', async () => {
  const topic = uniq('V5Delay');
  const group = uniq('GID_delay');
  await createTopic(topic, 1);
  await createGroup(group);
  const p = await producer([ topic ]);
  const c = await simpleConsumer(group, topic);
  try {
    const delay = 4000;
    const t0 = Date.now();
    const r = await p.send({ topic, body: Buffer.from('later'), deliveryTimestamp: new Date(t0 + delay) });
    const got = await receiveUntil(c, g => g.length >= 1, 30000);
    assert.strictEqual(got.length, 1, 'delay message never delivered');
    assert.strictEqual(got[0].messageId, r.messageId);
    const waited = Date.now() - t0;
    assert.ok(waited >= delay - 100, `delivered after ${waited} ms, before its ${delay} ms delay`);
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});

test('transactions: commit, rollback, and an unknown outcome resolved by the check', async () => {
  const topic = uniq('V5Tx');
  const group = uniq('GID_tx');
  await createTopic(topic, 1);
  await createGroup(group);
  let checked = 0;
  const checker = { async check() { checked++; return TransactionResolution.COMMIT; } };
  const p = await producer([ topic ], checker);
  const c = await simpleConsumer(group, topic);
  try {
    const t1 = p.beginTransaction();
    const committed = await p.send({ topic, body: Buffer.from('commit') }, t1);
    await t1.commit();
    const t2 = p.beginTransaction();
    const rolled = await p.send({ topic, body: Buffer.from('rollback') }, t2);
    await t2.rollback();
    const t3 = p.beginTransaction();
    const unknown = await p.send({ topic, body: Buffer.from('unknown') }, t3);
    const got = await receiveUntil(c, g => g.some(m => m.messageId === unknown.messageId) &&
      g.some(m => m.messageId === committed.messageId), 90000);
    const ids = got.map(m => m.messageId);
    assert.ok(ids.includes(committed.messageId), 'committed transactional message never delivered');
    assert.ok(!ids.includes(rolled.messageId), 'rolled back transactional message was delivered');
    assert.ok(checked >= 1, 'the broker never checked the pending transaction through the proxy');
    assert.ok(ids.includes(unknown.messageId), 'transaction resolved by the check was never delivered');
  } finally {
    await c.shutdown();
    await p.shutdown();
  }
});
