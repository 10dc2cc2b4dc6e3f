// The dashboard in headless Chromium (Debian's `chromium`, driven by
// playwright-core; no browser download) against the real streamgate binary
// and a private redis-server on free ports.
//
//   STREAMGATE_BIN  gateway binary (default ../../target/debug/streamgate)
//   CHROMIUM        browser binary (default /usr/bin/chromium)
//
// Screenshots land in tests/browser/artifacts/ (git-ignored).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.STREAMGATE_BIN || path.join(HERE, '../../target/debug/streamgate');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(HERE, 'artifacts');
const DEADLINE = 15_000;
const STREAM = 'demo:events:orders';

const children = [];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'streamgate-browser-'));
let redisPort;
let demoUrl;
let authUrl;
let context;
/** Every problem the page reported, and every request it made. */
const consoleErrors = [];
const requests = [];
/** Open pages, for the status history in a timeout message. */
const watched = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function redis(...args) {
  return execFileSync('redis-cli', ['-p', String(redisPort), ...args], { encoding: 'utf8' }).trim();
}

async function waitFor(what, check) {
  const start = Date.now();
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() - start > DEADLINE) {
      const seen = [];
      for (const page of watched.filter((p) => !p.isClosed())) {
        seen.push(await page.evaluate(() => (window.__statusLog || []).slice(-8)).catch(() => []));
      }
      throw new Error(`timed out waiting for ${what}; status lines shown: ${JSON.stringify(seen)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the binary and resolves with the dashboard URL it prints. */
function startGateway(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^dashboard on (http:\/\/\S+)$/m);
      if (m) resolve(m[1].replace(/\/$/, ''));
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => reject(new Error(`streamgate exited (${code}): ${err}`)));
  });
}

function sha256(text) {
  return createHash('sha256').update(text).digest('hex');
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `gateway binary ${BIN} is missing: run cargo build`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  redisPort = await freePort();
  const server = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', work], { stdio: 'ignore' });
  children.push(server);
  await waitFor('redis-server', () => redis('PING') === 'PONG');

  demoUrl = await startGateway(['demo', '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0',
    '--redis-url', `redis://127.0.0.1:${redisPort}`, '--claim-min-idle-ms', '300']);

  const auth = path.join(work, 'auth.toml');
  fs.writeFileSync(auth, [
    '[[tokens]]', 'name = "operator"', `sha256 = "${sha256('operator-token')}"`,
    'allow = [ { streams = "secure.*", permissions = ["admin", "consume", "produce"] } ]',
    '[[tokens]]', 'name = "viewer"', `sha256 = "${sha256('viewer-token')}"`,
    'allow = [ { streams = "secure.*", permissions = ["admin", "consume"] } ]',
    '[[tokens]]', 'name = "reader"', `sha256 = "${sha256('reader-token')}"`,
    'allow = [ { streams = "secure.*", permissions = ["consume"] } ]', ''].join('\n'));
  authUrl = await startGateway(['serve', '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0',
    '--redis-url', `redis://127.0.0.1:${redisPort}`, '--auth-config', auth]);

  // A fresh profile (--user-data-dir) in the run's private directory.
  context = await chromium.launchPersistentContext(path.join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context.on('page', (page) => watch(page));
});

after(async () => {
  if (context) await context.close();
  for (const child of children.reverse()) child.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
});

function watch(page) {
  watched.push(page);
  // Every text the status line showed, so a timed-out wait can say what
  // the person saw instead.
  page.addInitScript(() => {
    window.__statusLog = [];
    document.addEventListener('DOMContentLoaded', () => {
      const line = document.querySelector('#status');
      new MutationObserver(() => window.__statusLog.push(line.textContent))
        .observe(line, { childList: true, characterData: true, subtree: true });
    });
  });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('request', (r) => requests.push({
    url: r.url(), authorization: r.headers().authorization || null,
  }));
}

async function newPage() {
  return context.newPage();
}

const status = (page) => page.locator('#status');
const groupRows = (page, group) => page.locator(`[data-group="${group}"] table.consumers tbody tr`);
const pendingRows = (page, group) =>
  page.locator(`[data-group="${group}"] table.pending-entries tbody tr[data-id]`);

describe('demo dashboard', () => {
  let page;

  before(async () => {
    page = await newPage();
    await page.goto(demoUrl + '/');
    // The demo opens on its stream.
    await page.waitForURL(/\?stream=demo%3Aevents%3Aorders$/);
  });

  after(async () => page && page.close());

  test('shows the stream, both groups and the demo consumers', async () => {
    await page.locator('[data-group="notifications"]').waitFor();
    await page.locator('[data-group="analytics"]').waitFor();
    for (const c of ['worker-a', 'worker-b', 'worker-c']) {
      await page.locator(`#demo-consumers tr[data-consumer="${c}"]`).waitFor();
    }
    // Consumers appear in Redis (and in the groups) once they have read.
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('worker-c in analytics', async () =>
      (await groupRows(page, 'analytics').allTextContents()).some((t) => t.includes('worker-c')));
    await waitFor('a notifications consumer', async () =>
      (await groupRows(page, 'notifications').count()) > 0);
    await page.screenshot({ path: path.join(ARTIFACTS, 'demo-groups.png'), fullPage: true });
  });

  test('Produce appends and the tail shows the new entries', async () => {
    const rows = page.locator('#entries tbody tr');
    // Redis is the truth: first the page shows every entry so far.
    const before = Number(redis('XLEN', STREAM));
    await waitFor('every entry shown', async () => (await rows.count()) === before);
    await page.fill('#produce-form [name=count]', '2');
    await page.fill('#produce-form [name=type]', 'order.test');
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('produced 2 entries', async () =>
      (await status(page).textContent()) === 'produced 2 entries');
    assert.equal(Number(redis('XLEN', STREAM)), before + 2);
    await waitFor('two more rows', async () => (await rows.count()) === before + 2);
    assert.equal(await page.locator('#entries tbody tr td:nth-child(2)', { hasText: 'order.test' }).count(), 2);
  });

  test('an entry produced elsewhere appears without a reload', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const id = redis('XADD', STREAM, '*', 'type', 'order.external', 'ts_ms', String(Date.now()),
      'order_id', 'ext-1');
    await page.locator(`#entries tr[data-id="${id}"]`).waitFor({ timeout: DEADLINE });
    assert.equal(await page.evaluate(() => window.__noReload), true);
    assert.match(await page.locator(`#entries tr[data-id="${id}"]`).textContent(), /order_id=ext-1/);
  });

  test('Crash next 3 leaves entries pending; Reclaim gets them processed with delivery count 2', async () => {
    // worker-c is alone in analytics, so it receives every delivery.
    await page.locator('#demo-consumers tr[data-consumer="worker-c"]')
      .getByRole('button', { name: 'Crash next 3' }).click();
    await waitFor('crash armed', async () =>
      (await status(page).textContent()) === 'worker-c will drop its next 3 deliveries');
    await page.fill('#produce-form [name=count]', '3');
    await page.fill('#produce-form [name=type]', 'order.crash');
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('3 pending in analytics', async () => (await pendingRows(page, 'analytics').count()) === 3);
    const ids = await pendingRows(page, 'analytics').evaluateAll((rows) => rows.map((r) => r.dataset.id));
    for (const row of await pendingRows(page, 'analytics').all()) {
      assert.equal(await row.locator('td').nth(1).textContent(), 'worker-c');
      assert.equal(await row.locator('td.count').textContent(), '1');
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'demo-crashed.png'), fullPage: true });

    // A second consumer joins analytics and takes the stuck entries over.
    await page.fill('#add-form [name=group]', 'analytics');
    await page.fill('#add-form [name=consumer]', 'worker-d');
    await page.getByRole('button', { name: 'Add consumer' }).click();
    await waitFor('worker-d added', async () =>
      (await status(page).textContent()) === 'demo consumer worker-d joined group analytics');
    await page.selectOption('#reclaim-form .group-select', 'analytics');
    await waitFor('worker-d selectable', async () =>
      (await page.locator('#reclaim-form .consumer-select option[value="worker-d"]').count()) === 1);
    await page.selectOption('#reclaim-form .consumer-select', 'worker-d');
    await page.fill('#reclaim-form [name=min_idle_ms]', '300');
    // Entries become claimable once idle for 300 ms: click until they are.
    await waitFor('the reclaim', async () => {
      await page.getByRole('button', { name: 'Reclaim' }).click();
      await waitFor('an answer', async () => /^reclaimed/.test(await status(page).textContent()));
      return (await status(page).textContent()).startsWith('reclaimed 3 entries');
    });
    await waitFor('nothing pending in analytics', async () =>
      (await pendingRows(page, 'analytics').count()) === 0);
    const worker = page.locator('#demo-consumers tr[data-consumer="worker-d"]');
    for (const id of ids) {
      const pill = worker.locator(`.pill[data-id="${id}"]`);
      await pill.waitFor();
      assert.equal(await pill.getAttribute('data-count'), '2');
      assert.equal(await pill.getAttribute('data-outcome'), 'processed');
    }
    assert.equal(redis('XPENDING', STREAM, 'analytics').split('\n')[0], '0');
    await page.screenshot({ path: path.join(ARTIFACTS, 'demo-reclaimed.png'), fullPage: true });
  });

  test('Remove consumer, Replay and Trim work; errors carry the gateway message', async () => {
    await page.selectOption('#remove-form .group-select', 'analytics');
    await waitFor('worker-d removable', async () =>
      (await page.locator('#remove-form .consumer-select[name=consumer] option[value="worker-d"]').count()) === 1);
    await page.selectOption('#remove-form [name=consumer]', 'worker-d');
    await page.getByRole('button', { name: 'Remove consumer' }).click();
    await waitFor('removed', async () =>
      (await status(page).textContent()) === 'consumer worker-d removed from group analytics');

    await page.fill('#replay-form [name=start]', 'bogus');
    await page.getByRole('button', { name: 'Replay' }).click();
    await waitFor('the gateway error', async () =>
      /^INVALID_ARGUMENT: .*start/.test(await status(page).textContent()));

    await page.fill('#replay-form [name=start]', '-');
    await page.fill('#replay-form [name=limit]', '2');
    await page.getByRole('button', { name: 'Replay' }).click();
    await waitFor('replayed', async () => (await status(page).textContent()) === 'replayed 2 entries');
    assert.equal(await page.locator('#replay tbody tr').count(), 2);

    await page.fill('#trim-form [name=max_len]', '1');
    await page.selectOption('#trim-form [name=mode]', 'exact');
    await page.getByRole('button', { name: 'Trim' }).click();
    await waitFor('trimmed', async () => /^trimmed \d+ entr/.test(await status(page).textContent()));
    assert.equal(redis('XLEN', STREAM), '1');
    await waitFor('length 1 shown', async () =>
      (await page.locator('#summary dd').first().textContent()) === '1');
  });

  test('Reset demo empties the stream and restarts the consumers', async () => {
    await page.getByRole('button', { name: 'Reset demo' }).click();
    await waitFor('reset', async () => (await status(page).textContent()) === 'demo reset');
    assert.equal(redis('XLEN', STREAM), '0');
    await waitFor('length 0 shown', async () =>
      (await page.locator('#summary dd').first().textContent()) === '0');
    await waitFor('counters reset', async () =>
      (await page.locator('#demo-consumers td.processed').allTextContents()).join() === '0,0,0');
    await page.fill('#produce-form [name=count]', '1');
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('processed again', async () =>
      Number(await page.locator('#demo-consumers tr[data-consumer="worker-c"] td.processed').textContent()) === 1);
  });
});

describe('stream list', () => {
  test('lists the streams under the prefix live, and opens one', async () => {
    const page = await newPage();
    await page.goto(demoUrl + '/?stream=' + encodeURIComponent(STREAM));
    await page.getByRole('link', { name: 'Streams' }).click();
    const link = page.locator('#streams').getByRole('link', { name: STREAM, exact: true });
    await link.waitFor();
    const row = page.locator('#streams tbody tr', { has: page.getByRole('link', { name: STREAM, exact: true }) });
    const length = () => row.locator('td').nth(1).textContent({ timeout: 1000 });
    await waitFor('the length', async () => (await length()) === redis('XLEN', STREAM));
    redis('XADD', 'list.new', '*', 'type', 'x', 'ts_ms', '1');
    await page.locator('#streams').getByRole('link', { name: 'list.new', exact: true }).waitFor();
    await link.click();
    await page.locator('[data-group="analytics"]').waitFor();
    await page.close();
  });
});

describe('token rule (--auth-config)', () => {
  before(() => {
    redis('XADD', 'secure.orders', '*', 'type', 'order.placed', 'ts_ms', '1', 'order_id', 'sec-1');
    redis('XGROUP', 'CREATE', 'secure.orders', 'billing', '0');
    redis('XADD', 'other.orders', '*', 'type', 'order.placed', 'ts_ms', '1');
  });

  test('without a token no stream data is shown', async () => {
    const page = await newPage();
    await page.goto(authUrl + '/?stream=secure.orders');
    await waitFor('the token prompt', async () => /requires a token/.test(await status(page).textContent()));
    assert.equal(await page.locator('#login').isVisible(), true);
    assert.equal(await page.locator('[data-group]').count(), 0);
    assert.equal(await page.locator('#entries tbody tr').count(), 0);
    // The API itself refuses, with the gateway's own code and message.
    const answer = await page.evaluate(async () => {
      const res = await fetch('/api/stream?stream=secure.orders');
      return { grpcStatus: res.headers.get('grpc-status'), body: await res.json() };
    });
    assert.equal(answer.grpcStatus, '16');
    assert.equal(answer.body.error.status, 'UNAUTHENTICATED');
    assert.equal(answer.body.error.code, 16);
    assert.match(answer.body.error.message, /requires a token/);
    await page.close();
  });

  test('a token from #token= is sent as a bearer header only, and shows the stream', async () => {
    const page = await newPage();
    const first = requests.length;
    await page.goto(authUrl + '/?stream=secure.orders#token=operator-token');
    await page.locator('[data-group="billing"]').waitFor();
    await waitFor('the entry', async () => (await page.locator('#entries tbody tr').count()) === 1);
    // The fragment is gone from the address bar.
    assert.equal(new URL(page.url()).hash, '');
    const mine = requests.slice(first);
    assert.ok(mine.every((r) => !r.url.includes('operator-token')), 'token in a URL');
    const api = mine.filter((r) => new URL(r.url).pathname.startsWith('/api/') && r.url.includes('stream='));
    assert.ok(api.length > 0);
    assert.ok(api.every((r) => r.authorization === 'Bearer operator-token'));
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('produced', async () => (await status(page).textContent()) === 'produced 1 entry');
    // The stream list shows only streams the token may inspect.
    await page.goto(authUrl + '/');
    await page.locator('#streams a', { hasText: 'secure.orders' }).waitFor();
    assert.equal(await page.locator('#streams a', { hasText: 'other.orders' }).count(), 0);
    await page.close();
  });

  test('every action needs the permission of its RPC', async () => {
    const page = await newPage();
    await page.goto(authUrl + '/?stream=secure.orders');
    await page.fill('#token', 'viewer-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-group="billing"]').waitFor();
    await page.getByRole('button', { name: 'Produce', exact: true }).click();
    await waitFor('refused', async () =>
      /^PERMISSION_DENIED: .*viewer.*produce.*secure\.orders/.test(await status(page).textContent()));
    await page.screenshot({ path: path.join(ARTIFACTS, 'auth-denied.png'), fullPage: true });

    // Without admin the view itself is refused: no groups, no entries.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.fill('#token', 'reader-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitFor('refused view', async () =>
      /^PERMISSION_DENIED: .*reader.*admin/.test(await status(page).textContent()));
    assert.equal(await page.locator('[data-group]').count(), 0);
    assert.equal(await page.locator('#entries tbody tr').count(), 0);
    await page.close();
  });
});

describe('the whole session', () => {
  test('no console errors and no request to another host', () => {
    assert.deepEqual(consoleErrors, []);
    const hosts = new Set([new URL(demoUrl).host, new URL(authUrl).host]);
    const foreign = requests.filter((r) => !r.url.startsWith('data:') && !hosts.has(new URL(r.url).host));
    assert.deepEqual(foreign, []);
    assert.ok(requests.length > 10);
  });
});
