// BullMQ side of the queue benchmark; main.go runs it once per measurement
// and reads the JSON on its last output line. Progress goes to stderr.
import { Queue, Worker } from 'bullmq';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';

const { values: a } = parseArgs({
  options: {
    mode: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '6379' },
    jobs: { type: 'string', default: '100000' },
    concurrency: { type: 'string', default: '100' },
    rate: { type: 'string', default: '1000' },
    'pickup-ms': { type: 'string', default: '10000' },
    'lateness-jobs': { type: 'string', default: '10000' },
    'lateness-spread-ms': { type: 'string', default: '20000' },
  },
});
const connection = { host: a.host, port: Number(a.port), maxRetriesPerRequest: null };
const concurrency = Number(a.concurrency);
const jobOpts = { removeOnComplete: true, removeOnFail: true };
// Wall-clock milliseconds with sub-millisecond resolution.
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const name = 'bench';

function stats(ds) {
  ds.sort((x, y) => x - y);
  const q = (p) => ds[Math.min(ds.length - 1, Math.floor(p * ds.length))];
  return { N: ds.length, P50: q(0.5), P99: q(0.99), Max: ds[ds.length - 1] };
}

async function waitEmpty(queue) {
  for (;;) {
    const c = await queue.getJobCounts('active', 'wait', 'delayed', 'prioritized');
    if (c.active + c.wait + c.delayed + c.prioritized === 0) return;
    await sleep(1);
  }
}

async function drain() {
  const n = Number(a.jobs);
  const queue = new Queue(name, { connection });
  for (let i = 0; i < n; i += 1000) {
    const chunk = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) chunk.push({ name: 'noop', data: { i: j }, opts: jobOpts });
    await queue.addBulk(chunk);
  }
  let done = 0;
  let resolve;
  const all = new Promise((r) => (resolve = r));
  const start = now();
  const worker = new Worker(name, async () => { if (++done === n) resolve(); }, { connection, concurrency });
  await all;
  await waitEmpty(queue);
  const seconds = (now() - start) / 1000;
  await worker.close();
  await queue.close();
  return { Seconds: seconds };
}

async function pickup() {
  const n = Math.floor((Number(a['pickup-ms']) / 1000) * Number(a.rate));
  const step = 1000 / Number(a.rate);
  const queue = new Queue(name, { connection });
  const ds = [];
  let resolve;
  const all = new Promise((r) => (resolve = r));
  const worker = new Worker(name, async (job) => {
    ds.push(now() - job.data.t);
    if (ds.length === n) resolve();
  }, { connection, concurrency });
  await worker.waitUntilReady();
  await sleep(200);
  const start = now();
  // An absolute timetable: each turn adds every job whose time has come.
  let i = 0;
  while (i < n) {
    const due = start + i * step;
    const wait = due - now();
    if (wait > 0.5) await sleep(Math.max(0, wait - 0.5));
    while (i < n && start + i * step <= now()) {
      queue.add('noop', { t: now() }, jobOpts);
      i++;
    }
    await new Promise((r) => setImmediate(r));
  }
  await Promise.race([all, sleep(15000)]);
  await worker.close();
  await queue.close();
  return stats(ds);
}

async function lateness() {
  const n = Number(a['lateness-jobs']);
  const step = Number(a['lateness-spread-ms']) / n;
  const queue = new Queue(name, { connection });
  const base = now() + 3000;
  for (let i = 0; i < n; i += 1000) {
    const chunk = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      const due = base + j * step;
      chunk.push({ name: 'noop', data: { due }, opts: { ...jobOpts, delay: Math.max(0, due - now()) } });
    }
    await queue.addBulk(chunk);
  }
  const ds = [];
  let resolve;
  const all = new Promise((r) => (resolve = r));
  const worker = new Worker(name, async (job) => {
    ds.push(now() - job.data.due);
    if (ds.length === n) resolve();
  }, { connection, concurrency });
  await Promise.race([all, sleep(3000 + Number(a['lateness-spread-ms']) + 15000)]);
  await worker.close();
  await queue.close();
  return stats(ds);
}

const modes = { drain, pickup, lateness };
if (!modes[a.mode]) {
  console.error(`unknown mode ${a.mode}`);
  process.exit(2);
}
const res = await modes[a.mode]();
console.log(JSON.stringify(res));
process.exit(0);
