// A real browser: headless Chromium (TERN_CHROMIUM, Debian's) driven by playwright-core
// loads web/index.html, which uses the browser build of MQTT.js over WebSockets.
//   TERN_PAGE_OK            the page from an origin the listener allows
//   TERN_PAGE_OTHER_ORIGIN  the same page from an origin it does not
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const T = { timeout: 60000 };
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.TERN_CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
});

after(async () => { await browser?.close(); });

async function statusOf(url) {
  const page = await browser.newPage();
  try {
    await page.goto(url);
    await page.waitForFunction(() => {
      const s = document.getElementById('status').textContent;
      return s === 'received' || s.startsWith('error') || s === 'closed';
    }, null, { timeout: 20000 });
    return {
      status: await page.textContent('#status'),
      message: await page.textContent('#message'),
    };
  } finally {
    await page.close();
  }
}

test('the page connects, subscribes, publishes and shows its message', T, async () => {
  const r = await statusOf(process.env.TERN_PAGE_OK);
  assert.equal(r.status, 'received');
  assert.match(r.message, /^hello from Mozilla/);
});

test('the same page from an origin not allowed is refused', T, async () => {
  const r = await statusOf(process.env.TERN_PAGE_OTHER_ORIGIN);
  assert.notEqual(r.status, 'received');
  assert.equal(r.message, '');
});
