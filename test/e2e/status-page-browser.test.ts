/**
 * The status page in a real browser. Goal: headless Chromium shows every data rank of a real
 * store as alive with its usage and the files; after kill -9 of a data rank, the page shows that
 * rank suspect and then dead without a reload (live refresh), lists both changes with their
 * reasons, and keeps the other ranks alive. A screenshot of the final page is kept as a test
 * artifact (test/artifacts/status-page.png).
 *
 * Method: a real store (memflow-run -n 4, --http-port 0, test/helpers/store-process.ts) with
 * --heartbeat-ms 2000, so that a killed rank (its connection drops) stays suspect for the
 * disconnect grace, about a second, before it is dead; --dead-after-ms is long so that only the
 * dropped connection decides. Debian's chromium driven by playwright-core (never a downloaded
 * browser). The page is read through its data attributes (data-rank, data-state, data-to). A
 * suspect state that short could fall between two polls of the test, so a MutationObserver in
 * the page records every state the killed rank's row takes; the test waits on that record and on
 * the row, always with deadlines, never with sleeps. The page keeps its Content-Security-Policy
 * (no eval): the test's waits are functions, which the policy lets through. Without /usr/bin/chromium the test is
 * skipped and says why. The browser and the store are stopped in afterEach, also on failure.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  KiB,
  REPO_ROOT,
  StoreProcess,
  cleanupStores,
  makeTempDir,
} from '../helpers/store-process.js';
import { putFiles } from '../helpers/store-checks.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.join(REPO_ROOT, 'test', 'artifacts', 'status-page.png');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const skip = fs.existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is missing (apt-get install chromium; .ci/run does)`;
if (skip !== undefined) console.warn(`status page browser test skipped: ${skip}`);

let browser: Browser | undefined;

afterEach(async () => {
  try {
    await browser?.close();
  } finally {
    browser = undefined;
    await cleanupStores();
  }
});

function statusUrl(store: StoreProcess): string {
  return store.statusUrl();
}

/**
 * The page's globals, for functions that run in the page (tsconfig has no DOM library, and the
 * page's Content-Security-Policy forbids eval, so waits are functions, not strings). Those
 * functions are serialized into the page: they may use nothing of this module but types.
 */
interface PageElement {
  textContent: string | null;
  children: ArrayLike<PageElement>;
}
interface PageGlobals {
  document: { querySelectorAll(selector: string): ArrayLike<PageElement> };
  __states: string[];
}

const row = (rank: number, state: string): string =>
  `#ranks tbody tr[data-rank="${rank}"][data-state="${state}"]`;

/**
 * Page script: records every state the row of `rank` shows, in order, in window.__states. Rows
 * are rebuilt on each update, so it watches the whole table body.
 */
const recordStates = (rank: number): string => `(() => {
  const seen = [];
  window.__states = seen;
  const body = document.querySelector('#ranks tbody');
  const look = () => {
    const r = body.querySelector('tr[data-rank="${rank}"]');
    const state = r && r.getAttribute('data-state');
    if (state && seen[seen.length - 1] !== state) seen.push(state);
  };
  look();
  new MutationObserver(look).observe(body, { childList: true, subtree: true, attributes: true });
})()`;

describe.skipIf(skip !== undefined)('status page in headless Chromium', () => {
  it('shows every data rank alive, then a killed rank suspect and then dead, live', async () => {
    const store = await StoreProcess.start({
      chunkSize: '64K',
      extraArgs: ['--http-port', '0', '--heartbeat-ms', '2000', '--dead-after-ms', '60000'],
    });
    const url = statusUrl(store);
    const work = makeTempDir('status-browser-work');
    await putFiles(store, work, [
      ['report.pdf', 400 * KiB],
      ['<b>notes &amp; more<b>.txt', 3 * KiB],
    ]);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
    });
    // Nothing but the store's own server may be asked for anything.
    page.on('request', (req) => {
      if (!req.url().startsWith(url) && !req.url().startsWith('data:'))
        problems.push(`request outside the store: ${req.url()}`);
    });

    await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
    for (const rank of [1, 2, 3])
      await page.waitForSelector(row(rank, 'alive'), { timeout: 10_000 });
    await page.waitForSelector('#live[data-live="live"]', { timeout: 10_000 });
    // The files, with a name that would be markup if the page inserted it as HTML.
    await page.waitForSelector('#files tr[data-file="report.pdf"][data-health="healthy"]', {
      timeout: 10_000,
    });
    expect(await page.textContent('#files')).toContain('<b>notes &amp; more<b>.txt');
    expect(await page.locator('#files b').count()).toBe(0);
    // Usage reaches the page live: the data ranks report the uploads in their next heartbeats.
    await page.waitForFunction(
      () =>
        Array.from(
          (globalThis as unknown as PageGlobals).document.querySelectorAll(
            '#ranks tbody tr[data-rank]',
          ),
          (r) => r.children[5]?.textContent,
        ).every((used) => used !== '0 B'),
      undefined,
      { timeout: 15_000 },
    );
    expect(await page.textContent('#file-count')).toBe('2');
    expect(await page.textContent('#under-replicated')).toBe('0');

    await page.evaluate(recordStates(2));
    store.killRank(2);

    // Suspect at once (its connection dropped), dead after the disconnect grace.
    await page.waitForFunction(
      () => (globalThis as unknown as PageGlobals).__states.includes('suspect'),
      undefined,
      {
        timeout: 10_000,
      },
    );
    await page.waitForSelector(row(2, 'dead'), { timeout: 15_000 });
    const states = await page.evaluate(() => (globalThis as unknown as PageGlobals).__states);
    expect(states.slice(0, 3)).toEqual(['alive', 'suspect', 'dead']);
    expect(await page.textContent(`${row(2, 'dead')} .badge`)).toBe('dead');
    for (const rank of [1, 3]) expect(await page.locator(row(rank, 'alive')).count()).toBe(1);
    // Both changes stay listed, with their reasons, newest first.
    await page.waitForSelector('#transitions li[data-rank="2"][data-to="dead"]', { timeout: 5000 });
    const changes = await page.locator('#transitions li[data-rank="2"]').allTextContents();
    expect(changes).toHaveLength(2);
    expect(changes[0]).toMatch(/rank 2: suspect → dead/);
    expect(changes[1]).toMatch(/rank 2: alive → suspect.*connection dropped/);

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`status page screenshot: ${SCREENSHOT}`);
    expect(fs.statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
    expect(problems).toEqual([]);
  });
});
