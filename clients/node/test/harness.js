// @ts-check
/**
 * Test harness: a private redis-server and the real gateway binary on free
 * loopback ports (never a Redis the user already runs). Tests wait for
 * conditions by polling with a deadline (`waitUntil`), never by sleeping
 * for a guessed time.
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/**
 * Polls `probe` until it returns something truthy; rejects naming `what`.
 * @template T
 * @param {string} what @param {() => T | Promise<T>} probe @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export async function waitUntil(what, probe, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A port nobody listens on right now. @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** @param {number} port @returns {Promise<boolean>} */
function pong(port) {
  return new Promise((done) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'));
    socket.once('data', (data) => { socket.destroy(); done(data.toString().startsWith('+PONG')); });
    socket.once('error', () => done(false));
  });
}

/** A throwaway redis-server without persistence. */
export class RedisServer {
  static async start() {
    if (spawnSync('redis-server', ['--version']).error) {
      throw new Error('redis-server not found: install it (apt-get install redis-server)');
    }
    const port = await freePort();
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitUntil(`redis-server on port ${port}`, () => proc.exitCode === null && pong(port), 10_000);
    return new RedisServer(port, proc);
  }

  /** @param {number} port @param {import('node:child_process').ChildProcess} proc */
  constructor(port, proc) {
    this.port = port;
    this.proc = proc;
    this.url = `redis://127.0.0.1:${port}`;
  }

  stop() {
    this.proc.kill('SIGKILL');
  }
}

function gatewayBinary() {
  const path = process.env.STREAMGATE_BIN ?? join(REPO, 'target', 'debug', 'streamgate');
  if (!existsSync(path)) throw new Error(`gateway binary ${path} not found: run \`cargo build\` or set STREAMGATE_BIN`);
  return path;
}

/**
 * The streamgate binary serving `redisUrl`. `listen` defaults to port 0; the
 * bound address comes from the `listening on ADDR` line the gateway prints
 * once it accepts calls, the Prometheus endpoint's (a port of its own) from
 * `metrics on ADDR`. Its log goes to a file shown when startup fails.
 */
export class Gateway {
  /** @param {string} redisUrl @param {string} [listen] @returns {Promise<Gateway>} */
  static async start(redisUrl, listen = '127.0.0.1:0') {
    const log = join(tmpdir(), `streamgate-node-${process.pid}-${Date.now()}.log`);
    const proc = spawn(gatewayBinary(), ['serve', '--listen', listen, '--redis-url', redisUrl, '--metrics-listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', openSync(log, 'w')],
    });
    const exited = new Promise((done) => proc.once('exit', done));
    let started = () => {};
    /** @type {[string, string]} */
    const [addr, metricsAddr] = await new Promise((resolveAddr, reject) => {
      let out = '';
      const fail = (/** @type {string} */ why) => {
        proc.kill('SIGKILL');
        reject(new Error(`gateway ${why}; log:\n${readFileSync(log, 'utf8')}`));
      };
      const timer = setTimeout(() => fail('did not report its address within 15 s'), 15_000);
      proc.stdout?.on('data', (chunk) => {
        out += chunk;
        const listening = /^listening on (\S+)\n/m.exec(out);
        const metrics = /^metrics on (\S+)\n/m.exec(out);
        if (listening && metrics) { clearTimeout(timer); resolveAddr([listening[1], metrics[1]]); }
      });
      const onExit = () => { clearTimeout(timer); fail('exited'); };
      proc.once('exit', onExit);
      started = () => proc.off('exit', onExit);
    });
    started();
    return new Gateway(addr, proc, exited, metricsAddr);
  }

  /**
   * @param {string} addr @param {import('node:child_process').ChildProcess} proc @param {Promise<unknown>} exited
   * @param {string} metricsAddr
   */
  constructor(addr, proc, exited, metricsAddr) {
    this.addr = addr;
    this.metricsAddr = metricsAddr;
    this.proc = proc;
    this.exited = exited;
  }

  /**
   * The value of one sample of the gateway's /metrics, e.g.
   * `streamgate_rpc_requests_total{rpc="ProduceStream",code="Ok"}`; 0 when
   * absent (a counter not incremented yet).
   * @param {string} sample @returns {Promise<number>}
   */
  async metric(sample) {
    const text = await (await fetch(`http://${this.metricsAddr}/metrics`)).text();
    for (const line of text.split('\n')) {
      const at = line.lastIndexOf(' ');
      if (line.slice(0, at) === sample) return Number(line.slice(at + 1));
    }
    return 0;
  }

  /** SIGTERM (graceful shutdown) and wait for the exit. */
  async terminate() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = new AbortController();
    const timeout = sleep(30_000, 'timeout', { signal: timer.signal }).catch(() => 'exited');
    const first = await Promise.race([this.exited.then(() => 'exited'), timeout]);
    timer.abort();
    if (first === 'timeout') {
      this.proc.kill('SIGKILL');
      throw new Error('gateway did not exit within 30 s of SIGTERM');
    }
  }
}

/** A stream name no other test uses. @param {string} prefix */
export function uniqueStream(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}
