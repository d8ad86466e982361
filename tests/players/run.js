#!/usr/bin/env node
// One real player in headless Chromium against a live Ladder channel.
//
//   node run.js --player hls|dash|shaka --src <manifest URL> --seconds 75 \
//     --schedule 15:900,30:250,45:0 --out result.json [--chromium /usr/bin/chromium] \
//     [--target SECONDS] [--shaka '<JSON of Shaka configuration>'] [--query 'k=v&...']
//
// --shaka adds Shaka configuration (player.configure). --query adds page parameters:
// shakadebug=1 loads Shaka's debug build with V1 logging (the console is in --out).
//
// --target overrides the latency the player aims for (dash.js: liveDelay, instead of
// the MPD's ServiceDescription; hls.js: liveSyncDuration; Shaka: its liveSync target),
// to see what the origin sustains below the latency it advertises.
//
// Serves player.html and node_modules/ over http on a loopback port of its own (a
// different origin from Ladder's, as a real site would), opens the page in Debian's
// Chromium (puppeteer-core, executablePath), and plays for --seconds from the first
// frame. --schedule throttles the page's network with DevTools network emulation
// (CDP Network.emulateNetworkConditions): "T:KBPS" at T seconds after playback started,
// KBPS 0 lifts the throttle. Writes the page's report plus a summary to --out; exits 0
// when it got a report (the Rust test judges it), 2 on a harness failure.

'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

function args() {
  const a = { seconds: 75, schedule: '', chromium: '/usr/bin/chromium', target: '', shaka: '' };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  for (const k of ['player', 'src', 'out']) if (!a[k]) throw new Error(`--${k} is required`);
  a.seconds = Number(a.seconds);
  a.schedule = a.schedule ? a.schedule.split(',').map((s) => {
    const [t, kbps] = s.split(':').map(Number);
    return { t, kbps };
  }) : [];
  return a;
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

// The page and the players, over http. Only files under this folder; nothing else.
function serve(root) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = path.normalize(path.join(root, decodeURIComponent(url.pathname)));
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return +s[i].toFixed(3);
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function main() {
  const a = args();
  const server = await serve(__dirname);
  const page_url = `http://127.0.0.1:${server.address().port}/player.html?player=${a.player}&src=${encodeURIComponent(a.src)}${a.target ? `&target=${Number(a.target)}` : ''}${a.shaka ? `&shaka=${encodeURIComponent(a.shaka)}` : ''}${a.query ? '&' + a.query : ''}`;
  const browser = await puppeteer.launch({
    executablePath: a.chromium,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--mute-audio',
      '--autoplay-policy=no-user-gesture-required',
      // a backgrounded headless page must not have its timers or media throttled
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
  const console_lines = [];
  const requests = [];
  const wall0 = Date.now();
  let report;
  const throttles = [];
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (console_lines.length < 2000) console_lines.push(`${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => console_lines.push(`pageerror: ${e.message}`));
    // what failed to load, by URL (the console only says 'status of 404')
    page.on('response', (r) => {
      if (r.status() >= 400 && console_lines.length < 2000) console_lines.push(`http ${r.status()}: ${r.url()}`);
    });
    page.on('request', (r) => {
      if (requests.length < 2000) requests.push(`${((Date.now() - wall0) / 1000).toFixed(2)} start ${r.url().replace(/^http:\/\/[^/]+/, '')}`);
    });
    page.on('requestfinished', (r) => {
      if (requests.length < 2000) requests.push(`${((Date.now() - wall0) / 1000).toFixed(2)} ${r.response() && r.response().status()} ${r.url().replace(/^http:\/\/[^/]+/, '')}`);
    });
    page.on('requestfailed', (r) => {
      if (console_lines.length < 2000) console_lines.push(`failed: ${r.url()} ${r.failure() && r.failure().errorText}`);
    });
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    await page.goto(page_url);

    // wait (bounded) for the first frame
    const deadline = Date.now() + 30000;
    let started = null;
    while (Date.now() < deadline) {
      started = await page.evaluate(() => window.report && window.report.started);
      const fatal = await page.evaluate(() => window.report && window.report.fatal.length);
      if (started !== null || fatal) break;
      await sleep(200);
    }
    if (started !== null) {
      const t0 = Date.now();
      const steps = [...a.schedule];
      while (Date.now() - t0 < a.seconds * 1000) {
        const el = (Date.now() - t0) / 1000;
        while (steps.length && steps[0].t <= el) {
          const s = steps.shift();
          await cdp.send('Network.emulateNetworkConditions', {
            offline: false,
            latency: 0,
            downloadThroughput: s.kbps > 0 ? (s.kbps * 1000) / 8 : -1,
            uploadThroughput: -1,
          });
          const pageT = await page.evaluate(() => now()); // page.html's clock
          throttles.push({ t: +pageT.toFixed(3), kbps: s.kbps });
          process.stderr.write(`[${a.player}] ${el.toFixed(1)} s: ${s.kbps ? `throttled to ${s.kbps} kbit/s` : 'throttle lifted'}\n`);
        }
        await sleep(250);
      }
    }
    report = await page.evaluate(() => window.finishReport());
  } finally {
    await browser.close().catch(() => {});
    server.close();
  }

  // Throttle windows in page time: from a step with kbps > 0 to the next step.
  const windows = [];
  for (let i = 0; i < throttles.length; i++) {
    if (throttles[i].kbps > 0) windows.push([throttles[i].t, i + 1 < throttles.length ? throttles[i + 1].t : Infinity]);
  }
  const inThrottle = (s) => windows.some(([a0, b0]) => s.start < b0 && s.start + s.seconds > a0);
  const STARTUP_SECONDS = 3;
  const inStartup = (s) => report.started !== null && s.start < report.started + STARTUP_SECONDS;
  // Latency phases. steady: from 5 s after the first frame to the first throttle
  // step (the whole run when there is none): what a viewer on a good network sees.
  // recovered: from 15 s after the throttle was lifted to the end.
  const first = throttles.length ? throttles[0].t : Infinity;
  const lift = throttles.length && throttles[throttles.length - 1].kbps === 0 ? throttles[throttles.length - 1].t : null;
  const phase = (k, from, to) => report.latency.filter((x) => x.t >= from && x.t < to).map((x) => x[k])
    .filter((x) => x !== null && Number.isFinite(x));
  const stats = (xs) => ({ p50: quantile(xs, 0.5), p90: quantile(xs, 0.9), n: xs.length });
  const latency = {};
  for (const k of ['player', 'wallclock']) {
    latency[k] = {
      steady: stats(phase(k, (report.started || 0) + 5, first)),
      recovered: lift === null ? null : stats(phase(k, lift + 15, Infinity)),
      all: stats(phase(k, 0, Infinity)),
    };
  }
  // Back on the top rung after the throttle was lifted: when (seconds after the lift).
  const top = Math.max(0, ...report.renditions.map((r) => r.height));
  let current = null;
  let topAfterLift = null;
  for (const r of report.renditions) {
    if (lift !== null && r.t >= lift && r.height === top && topAfterLift === null) topAfterLift = +(r.t - lift).toFixed(3);
    if (lift !== null && r.t < lift) current = r.height;
  }
  if (lift !== null && topAfterLift === null && current === top && !report.renditions.some((r) => r.t >= lift)) topAfterLift = 0;
  const summary = {
    player: a.player,
    target: a.target ? Number(a.target) : null,
    version: report.version,
    src: a.src,
    started: report.started,
    played_seconds: +report.played.toFixed(3),
    fatal: report.fatal,
    stalls_total: report.stalls.length,
    max_stall: Math.max(0, ...report.stalls.map((s) => s.seconds)),
    // start-up (the first STARTUP_SECONDS after the first frame, while the player
    // settles at the live edge) is start-up time, not rebuffering: reported apart
    max_stall_startup: Math.max(0, ...report.stalls.filter((s) => inStartup(s)).map((s) => s.seconds)),
    max_stall_outside_throttle: Math.max(0, ...report.stalls.filter((s) => !inThrottle(s) && !inStartup(s)).map((s) => s.seconds)),
    heights: [...new Set(report.renditions.map((r) => r.height))],
    throttles,
    top_after_lift: topAfterLift,
    latency,
  };
  fs.writeFileSync(a.out, JSON.stringify({ summary, report, console: console_lines, requests }, null, 1));
  process.stdout.write(JSON.stringify(summary) + '\n');
}

main().catch((e) => {
  process.stderr.write(`run.js: ${e.stack || e}\n`);
  process.exit(2);
});
