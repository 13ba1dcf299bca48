'use strict';
/*
 * Compatibility test: the unmodified RocketMQ 4.x Node.js client ali-ons
 * against our nameserver and broker. Run by run-ali-ons.sh with NAMESRV_ADDR
 * and BROKER_ADDR set.
 *
 * 1. creates a topic on the broker (UPDATE_AND_CREATE_TOPIC) and waits for
 *    its route to appear on the nameserver;
 * 2. produces 10 messages alternating tags TagA/TagB, each with a key;
 * 3. a consumer process (clustering, tag subscription "TagA", from the first
 *    offset) must receive exactly the 5 TagA messages, then closes (which
 *    commits its offsets);
 * 4. 6 more messages are produced (3 TagA, 3 TagB);
 * 5. a new consumer process of the same group must receive exactly the 3 new
 *    TagA messages: nothing committed is delivered again, nothing is lost.
 * Each consumer runs in its own process because ali-ons shares one client per
 * client id within a process, so a "restart" has to be a new process.
 */
const assert = require('assert');
const { fork } = require('child_process');
const { Producer, Consumer, Message } = require('ali-ons');
const MQClientAPI = require('ali-ons/lib/mq_client_api');

const NAMESRV = process.env.NAMESRV_ADDR;
const BROKER = process.env.BROKER_ADDR;
const TOPIC = process.env.COMPAT_TOPIC || `AliOnsCompat_${process.pid}`;
const GROUP = process.env.COMPAT_GROUP || `GID_AliOnsCompat_${process.pid}`;
const QUIET_MS = 3000;

// ali-ons insists on an HTTP client for looking up nameservers; with nameSrv
// set it is never used, and this one makes sure of that.
const noHttp = {
  request() {
    throw new Error('ali-ons tried an HTTP nameserver lookup; nameSrv should have been used');
  },
};

const silent = { info() {}, warn() {}, debug() {}, error(e) { if (process.env.COMPAT_VERBOSE) console.error(e); } };

function sleep(ms) { return new Promise(r => setTimeout(r, ms)); }

async function createTopic() {
  const api = new MQClientAPI({ nameSrv: [ NAMESRV ], httpclient: noHttp, logger: silent });
  await api.ready();
  await api.createTopic(BROKER, 'TBW102', {
    topicName: TOPIC, readQueueNums: 4, writeQueueNums: 4, perm: 6,
    topicFilterType: 'SINGLE_TAG', topicSysFlag: 0, order: false,
  }, 5000);
  const deadline = Date.now() + 60000;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      const route = await api.getTopicRouteInfoFromNameServer(TOPIC, 3000);
      if (route && route.queueDatas && route.queueDatas.length) {
        await api.close();
        return route;
      }
    } catch (err) {
      lastErr = err;
    }
    await sleep(500);
  }
  await api.close();
  throw new Error(`route of ${TOPIC} never appeared on the nameserver: ${lastErr && lastErr.message}`);
}

async function produce(from, to) {
  const producer = new Producer({
    nameSrv: [ NAMESRV ], httpclient: noHttp, producerGroup: `PID_${GROUP}`, logger: silent,
  });
  await producer.ready();
  const sent = [];
  for (let i = from; i < to; i++) {
    const tag = i % 2 === 0 ? 'TagA' : 'TagB';
    const msg = new Message(TOPIC, tag, `body-${i}`);
    msg.keys = [ `key-${i}` ];
    const r = await producer.send(msg);
    assert.strictEqual(r.sendStatus, 'SEND_OK', `message ${i}: status ${r.sendStatus}`);
    assert.ok(/^[0-9A-F]{32}$/.test(r.msgId), `message ${i}: msgId ${r.msgId} is not an offset id`);
    assert.ok(r.messageQueue && r.messageQueue.brokerName, `message ${i}: no queue in the result`);
    assert.ok(Number.isInteger(r.queueOffset) && r.queueOffset >= 0, `message ${i}: queueOffset ${r.queueOffset}`);
    sent.push({ i, tag, key: `key-${i}`, msgId: r.msgId });
  }
  await producer.close();
  return sent;
}

// Child process: consume until `expect` messages arrived and QUIET_MS passed
// with nothing more, then close and report what was received.
async function consumeChild(expect) {
  const consumer = new Consumer({
    nameSrv: [ NAMESRV ], httpclient: noHttp, consumerGroup: GROUP, logger: silent,
    consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET', persistConsumerOffsetInterval: 1000,
  });
  const errors = [];
  consumer.on('error', err => errors.push(`${err.name || 'Error'} ${err.code || ''}: ${err.message}`));
  const got = [];
  let last = Date.now();
  consumer.subscribe(TOPIC, 'TagA', async msg => {
    got.push({ key: msg.keys, tag: msg.tags, body: msg.body ? msg.body.toString() : '', msgId: msg.msgId });
    last = Date.now();
  });
  await consumer.ready();
  const deadline = Date.now() + 90000;
  while (Date.now() < deadline && (got.length < expect || Date.now() - last < QUIET_MS)) {
    await sleep(200);
  }
  await consumer.close();
  process.send({ got, errors }, () => process.exit(0));
}

function runConsumer(expect) {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, [ 'consume', String(expect) ], {
      env: Object.assign({}, process.env, { COMPAT_TOPIC: TOPIC, COMPAT_GROUP: GROUP }),
    });
    let result;
    child.on('message', m => { result = m; });
    child.on('error', reject);
    child.on('exit', code => {
      if (code !== 0 || !result) {
        reject(new Error(`consumer process exited with ${code} without a result`));
      } else {
        resolve(result);
      }
    });
  });
}

function checkReceived(phase, result, sent) {
  const want = sent.filter(m => m.tag === 'TagA').map(m => m.key).sort();
  const gotKeys = result.got.map(m => m.key).sort();
  for (const m of result.got) {
    assert.strictEqual(m.tag, 'TagA', `${phase}: received a message tagged ${m.tag} (${m.key})`);
    assert.strictEqual(m.body, `body-${m.key.slice(4)}`, `${phase}: body of ${m.key} is ${m.body}`);
  }
  const dups = gotKeys.filter((k, i) => i > 0 && gotKeys[i - 1] === k);
  assert.deepStrictEqual(dups, [], `${phase}: delivered more than once: ${dups.join(', ')}`);
  assert.deepStrictEqual(gotKeys, want, `${phase}: received [${gotKeys.join(', ')}], expected [${want.join(', ')}]`);
  console.log(`${phase}: received exactly ${gotKeys.length} TagA messages: ${gotKeys.join(', ')}`);
  if (result.errors.length) {
    console.log(`${phase}: client reported (not fatal): ${result.errors.slice(0, 5).join(' | ')}`);
  }
}

async function main() {
  assert.ok(NAMESRV && BROKER, 'NAMESRV_ADDR and BROKER_ADDR must be set');
  const route = await createTopic();
  console.log(`topic ${TOPIC} routed to ${route.brokerDatas.map(b => b.brokerName).join(', ')}`);
  const first = await produce(0, 10);
  console.log(`produced ${first.length} messages`);
  checkReceived('first consumer', await runConsumer(5), first);
  const second = await produce(10, 16);
  console.log(`produced ${second.length} more messages`);
  checkReceived('restarted consumer', await runConsumer(3), second);
  console.log('ali-ons compatibility: OK');
}

if (process.argv[2] === 'consume') {
  consumeChild(Number(process.argv[3])).catch(err => {
    console.error(`consumer failed: ${err.stack || err}`);
    process.exit(1);
  });
} else {
  main().then(() => process.exit(0), err => {
    console.error(`ali-ons compatibility FAILED: ${err.stack || err}`);
    process.exit(1);
  });
}
