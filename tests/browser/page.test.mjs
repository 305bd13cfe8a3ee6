// The upload page in a real browser: Debian's Chromium, driven by playwright-core.
//
//   PIXMILL_TEST_GATEWAY=http://127.0.0.1:8095 node --test tests/browser/
//
// This file starts nothing but the browser. A gateway and at least one worker must
// already run at PIXMILL_TEST_GATEWAY (the Rust harness starts them, or start them by
// hand). PIXMILL_TEST_PHOTOS names the two photos to upload (comma-separated absolute
// paths); by default the first two JPEGs of PIXMILL_PHOTOS_DIR (var/photos). Screenshots
// and the downloaded result land in var/browser/.
//
// With PIXMILL_TEST_GATEWAY_KEYED (a gateway with PIXMILL_AUTH=required), PIXMILL_TEST_KEY
// (a key of it with jobs:write and jobs:read) and PIXMILL_TEST_WRONG_KEY (a well-formed key
// it does not know), the page is also driven through signing in; without them that part
// is skipped. PIXMILL_TEST_ADMIN_KEY, an admin key, also shows the Operations panel's figures.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GATEWAY = (process.env.PIXMILL_TEST_GATEWAY || '').replace(/\/+$/, '');
const SHOTS = path.join(ROOT, 'var', 'browser');
const WAIT = 30_000;
const KEYED = (process.env.PIXMILL_TEST_GATEWAY_KEYED || '').replace(/\/+$/, '');
const KEY = process.env.PIXMILL_TEST_KEY || '';
const WRONG_KEY = process.env.PIXMILL_TEST_WRONG_KEY || '';
const ADMIN_KEY = process.env.PIXMILL_TEST_ADMIN_KEY || '';

function photos() {
  if (process.env.PIXMILL_TEST_PHOTOS) {
    return process.env.PIXMILL_TEST_PHOTOS.split(',').map((p) => p.trim()).filter(Boolean);
  }
  const dir = path.resolve(ROOT, process.env.PIXMILL_PHOTOS_DIR || 'var/photos');
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /\.jpe?g$/i.test(n)).sort() : [];
  return names.slice(0, 2).map((n) => path.join(dir, n));
}

// Debian's Chromium with a profile of its own; closing it ends the browser session.
function launch(userDataDir) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
}

// Runs in the page: records every state each row goes through, however briefly.
function recordRowStates() {
  window.__rowStates = {};
  new MutationObserver((muts) => {
    for (const m of muts) {
      const li = m.target;
      if (m.attributeName === 'data-state' && li.dataset?.file) {
        const seen = (window.__rowStates[li.dataset.file] ||= []);
        if (seen[seen.length - 1] !== li.dataset.state) seen.push(li.dataset.state);
      }
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
}

// Runs in the page: reports every Content-Security-Policy violation on the console, where
// watchCsp() collects it (the init script adds the listener again on every navigation).
function reportCspViolations() {
  document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
  });
}

// Collects into `into` every console message about the Content-Security-Policy: the
// violations reportCspViolations() reports, and Chromium's own "Refused to …" errors.
async function watchCsp(page, into) {
  page.on('console', (m) => {
    if (/Content Security Policy|CSP violation|Refused to/i.test(m.text())) into.push(m.text());
  });
  await page.addInitScript(reportCspViolations);
}

// The security headers the pages must carry, and the policy's framing rule.
function assertPageHeaders(headers, where) {
  const csp = headers['content-security-policy'] || '';
  assert.match(csp, /frame-ancestors 'none'/, `${where}: CSP ${csp}`);
  assert.match(csp, /default-src 'none'/, `${where}: CSP ${csp}`);
  assert.equal(headers['x-content-type-options'], 'nosniff', where);
  assert.equal(headers['x-frame-options'], 'DENY', where);
  assert.equal(headers['referrer-policy'], 'same-origin', where);
}

describe('upload page in Chromium', { timeout: 180_000 }, () => {
  let context, page, userDataDir;
  const requests = []; // every request the page made: { url, type }
  const pageErrors = [];
  const cspErrors = [];
  const [photoA, photoB] = photos();
  const nameA = photoA && path.basename(photoA);
  const nameB = photoB && path.basename(photoB);
  const row = (name) => page.locator(`li.row[data-file="${name}"]`);
  const shot = (name) => page.screenshot({ path: path.join(SHOTS, name), fullPage: true });

  before(async () => {
    assert.ok(GATEWAY, 'PIXMILL_TEST_GATEWAY must name a running gateway, e.g. http://127.0.0.1:8095');
    assert.ok(photoA && photoB && fs.existsSync(photoA) && fs.existsSync(photoB),
      `two photos are needed (PIXMILL_TEST_PHOTOS or var/photos; run make photos), got ${photoA}, ${photoB}`);
    fs.mkdirSync(SHOTS, { recursive: true });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pixmill-browser-'));
    context = await launch(userDataDir);
    page = context.pages()[0] || (await context.newPage());
    page.on('request', (r) => requests.push({ url: r.url(), type: r.resourceType() }));
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    // A standing listener turns file-chooser interception on before any key is pressed;
    // without it the first Enter can race the interception and open no chooser at all.
    page.on('filechooser', () => {});
    // Record every state each row goes through, however briefly.
    await page.addInitScript(recordRowStates);
    await watchCsp(page, cspErrors);
  });

  after(async () => {
    await context?.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  });

  it('opens, and Tab reaches the drop zone first, with a visible focus ring', async () => {
    const res = await page.goto(`${GATEWAY}/`);
    assert.equal(res.status(), 200);
    const headers = await res.allHeaders();
    assertPageHeaders(headers, '/');
    // The one inline script runs by its hash; no 'unsafe-inline' for scripts.
    assert.match(headers['content-security-policy'], /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
    assert.match(headers['content-security-policy'], /connect-src 'self'/);
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const a = document.activeElement;
      const cs = getComputedStyle(a);
      return { id: a.id, outline: cs.outlineStyle, width: parseFloat(cs.outlineWidth) };
    });
    assert.equal(focused.id, 'drop', 'the first Tab stop is the drop zone');
    assert.notEqual(focused.outline, 'none', 'the focused drop zone shows an outline');
    assert.ok(focused.width >= 2, `focus outline is ${focused.width}px wide`);
  });

  it('uploads two photos chosen with the keyboard and follows both jobs through the events stream', async () => {
    // Enter on the focused drop zone opens the file picker.
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.keyboard.press('Enter')]);
    assert.ok(chooser.isMultiple(), 'the file input accepts several files');
    await chooser.setFiles([photoA, photoB]);
    const picked = page.locator('#picked > li');
    await picked.nth(1).waitFor();
    assert.equal(await picked.count(), 2);
    // Both previews load (they are object URLs of the chosen files) and show their size.
    await page.waitForFunction(() => [...document.querySelectorAll('#picked img.thumb')]
      .filter((i) => i.complete && i.naturalWidth > 0).length === 2, null, { timeout: WAIT });
    assert.match(await picked.nth(0).innerText(), /\d+×\d+ px/);
    assert.equal(await page.locator('#submit').innerText(), 'Process 2 images');

    // The pipeline's first step is a resize; make it 320×200 (fit stays cover, the default).
    assert.equal(await page.locator('#s1-op').inputValue(), 'resize');
    await page.getByLabel('Width (px) (optional)').fill('320');
    await page.getByLabel('Height (px) (optional)').fill('200');
    assert.equal(await page.locator('#s1-fit').inputValue(), 'cover');
    assert.match(await page.locator('#curl').textContent(), /for f in .*'width=320'.*'height=200'/s);

    // Slow uploads down so the screenshot catches them in flight.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 400 * 1024 });

    // Tab from the last output field to the submit button, and press Enter.
    await page.locator('#quality').focus();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'submit');
    await page.keyboard.press('Enter');

    await row(nameA).waitFor();
    await row(nameB).waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('li.row progress')].some((p) => p.value > 0 && p.value < 100),
      null, { timeout: WAIT }).catch(() => {});
    await shot('01-progress-in-flight.png');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

    for (const name of [nameA, nameB]) {
      await page.waitForFunction((n) => document.querySelector(`li.row[data-file="${n}"]`)?.dataset.state === 'succeeded',
        name, { timeout: WAIT });
      assert.equal(await row(name).locator('.badge').innerText(), 'succeeded');
      assert.match(await row(name).locator('.row-status').innerText(), /Result 320×200 px · [\d.]+ KB/);
      assert.equal(await row(name).getAttribute('data-transport'), 'events');
      assert.equal(await row(name).locator('a.dl').count(), 1);
    }
    const states = await page.evaluate(() => window.__rowStates);
    for (const name of [nameA, nameB]) {
      assert.ok(states[name].includes('uploading'), `${name} showed its upload: ${states[name]}`);
      assert.equal(states[name].at(-1), 'succeeded');
    }
    // Progress came from EventSource streams, one per job, and no long-poll was made.
    const ids = await page.locator('li.row').evaluateAll((lis) => lis.map((li) => li.dataset.jobId));
    const streams = requests.filter((r) => /\/v1\/jobs\/[^/]+\/events$/.test(new URL(r.url).pathname));
    for (const id of ids) {
      assert.ok(streams.some((r) => r.url.includes(id) && r.type === 'eventsource'), `an EventSource followed job ${id}`);
    }
    assert.deepEqual(requests.filter((r) => r.url.includes('wait=')), [], 'no long-poll requests');
    await page.waitForFunction(() => /2 succeeded/.test(document.getElementById('announcer').textContent));
    await page.mouse.move(0, 0);
    await shot('02-finished-rows.png');
  });

  it('compares input and result side by side and with the slider', async () => {
    // Select the second row from the keyboard: focus the first row, then Arrow Down.
    const first = await page.locator('li.row').nth(0).getAttribute('data-file');
    const second = await page.locator('li.row').nth(1).getAttribute('data-file');
    await page.locator('li.row').nth(0).locator('button.pick').focus();
    await page.keyboard.press('ArrowDown');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), second);
    assert.equal(await page.locator('li.row.selected').getAttribute('data-file'), second);
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('Enter');
    assert.equal(await page.locator('li.row.selected').getAttribute('data-file'), first);
    assert.equal(await page.locator('li.row.selected button.pick').getAttribute('aria-current'), 'true');

    const before = page.locator('#cmp-before img.before');
    const afterImg = page.locator('#cmp-after img.after');
    await page.waitForFunction(() => ['#cmp-before img', '#cmp-after img']
      .every((s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }), null, { timeout: WAIT });
    const size = await afterImg.evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight }));
    // fit=cover (the default) gives exactly 320×200; in any case it fits within the box.
    assert.ok(size.w <= 320 && size.h <= 200, `result ${size.w}×${size.h} fits 320×200`);
    assert.deepEqual(size, { w: 320, h: 200 });
    const input = await before.evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.src }));
    assert.ok(input.src.startsWith('blob:'), 'the input preview is an object URL');
    assert.match(await page.locator('#cmp-before figcaption').textContent(), new RegExp(`^Before.*${input.w}×${input.h} px`));
    assert.match(await page.locator('#cmp-after figcaption').textContent(), /^After.*320×200 px/);
    await page.mouse.move(0, 0);
    await page.locator('#detail-panel').scrollIntoViewIfNeeded();
    await shot('03-before-after.png');

    await page.getByLabel('Slider').check();
    const range = page.getByLabel('Divider');
    await range.focus();
    for (let i = 0; i < 15; i++) await page.keyboard.press('ArrowLeft');
    assert.equal(await range.inputValue(), '35');
    assert.equal(await page.locator('#cmp-stage').evaluate((s) => s.style.getPropertyValue('--pos')), '35%');
    await page.waitForFunction(() => [...document.querySelectorAll('#cmp-stage img')].every((i) => i.complete && i.naturalWidth > 0));
    await shot('03b-before-after-slider.png');
    await page.getByLabel('Side by side').check();
  });

  it('downloads a result through its download link', async () => {
    const link = row(nameA).locator('a.dl');
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    assert.match(download.suggestedFilename(), /\.jpg$/);
    const saved = path.join(SHOTS, `download-${download.suggestedFilename()}`);
    await download.saveAs(saved);
    const head = fs.readFileSync(saved).subarray(0, 3);
    assert.deepEqual([...head], [0xFF, 0xD8, 0xFF], 'the download is a JPEG');
  });

  it('shows a clear notice for a text file, never a broken image, and the server\'s 415', async () => {
    // Dropped on the drop zone this time: a text file, and a text file named like a JPEG.
    const dataTransfer = await page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['Shopping list:\n- milk\n- bread\n'], 'notes.txt', { type: 'text/plain' }));
      dt.items.add(new File(['this is not really a JPEG\n'], 'holiday.jpg', { type: 'image/jpeg' }));
      return dt;
    });
    await page.locator('#drop').dispatchEvent('dragenter', { dataTransfer });
    assert.ok(await page.locator('#drop.over').count(), 'the drop zone lights up while a file is over it');
    await page.locator('#drop').dispatchEvent('drop', { dataTransfer });
    assert.equal(await page.locator('#drop.over').count(), 0);
    for (const name of ['notes.txt', 'holiday.jpg']) {
      const item = page.locator(`#picked > li[data-file="${name}"]`);
      await item.locator('.notice').waitFor();
      assert.match(await item.locator('.notice').innerText(), /Not an image[\s\S]*not a JPEG, PNG, GIF or WebP image: it contains text/);
      assert.equal(await item.locator('img').count(), 0, `${name} has no preview <img>`);
    }
    await page.locator('#picked-box').scrollIntoViewIfNeeded();
    await shot('04a-not-an-image-notice.png');
    await page.locator('#submit').click();
    for (const name of ['notes.txt', 'holiday.jpg']) {
      await page.waitForFunction((n) => document.querySelector(`li.row[data-file="${n}"]`)?.dataset.state === 'rejected',
        name, { timeout: WAIT });
      const text = await row(name).locator('.error').innerText();
      assert.match(text, /Upload refused \(HTTP 415\)/);
      assert.match(text, /unsupported_media_type/);
    }
    await row('notes.txt').locator('button.pick').click();
    assert.match(await page.locator('#cmp-before .notice').innerText(), /No preview of the input/);
    assert.match(await page.locator('#job-error').innerText(), /unsupported_media_type/);
    const broken = await page.evaluate(() => [...document.images]
      .filter((i) => i.getClientRects().length && (!i.complete || i.naturalWidth === 0)).map((i) => i.alt || i.src));
    assert.deepEqual(broken, [], 'no broken image boxes');
    await page.mouse.move(0, 0);
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot('04-error-notice.png');
  });

  it('falls back to long-polls when the events stream is refused', async () => {
    // A proxy that does not pass server-sent events through, say: every stream gets a 503.
    await page.route('**/v1/jobs/*/events', (route) => route.fulfill({ status: 503, contentType: 'application/json',
      body: '{"error":{"code":"unavailable","message":"no streams here"}}' }));
    await page.locator('#file').setInputFiles([photoA]);
    await page.locator('#picked > li img.thumb').waitFor();
    await page.locator('#submit').click();
    const newest = page.locator('li.row').first();
    assert.equal(await newest.getAttribute('data-file'), nameA);
    await page.waitForFunction(() => document.querySelector('li.row')?.dataset.state === 'succeeded', null, { timeout: WAIT });
    assert.equal(await newest.getAttribute('data-transport'), 'long-poll');
    const id = await newest.getAttribute('data-job-id');
    assert.ok(requests.some((r) => r.url.includes(`/v1/jobs/${id}?wait=30`)), 'the job was long-polled');
    assert.match(await newest.locator('.row-status').innerText(), /Result 320×200 px/);
    await page.unroute('**/v1/jobs/*/events');
  });

  it('makes several sizes of one photo, with WebP copies, and lists each for download', async () => {
    await page.locator('#file').setInputFiles([photoA]);
    await page.locator('#picked > li img.thumb').waitFor();
    const input = await page.locator('#picked > li img.thumb').evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight }));
    await page.getByLabel('Also make several sizes').check();
    const widths = page.locator('#sizes-widths');
    assert.ok(await widths.isVisible());
    assert.equal(await widths.inputValue(), '320, 640, 1280');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'sizes-widths', 'the widths field has the focus');

    // Bad widths are refused in the page, saying why, and nothing is sent.
    const jobs = await page.locator('li.row').count();
    const refused = async (text, why, field = widths) => {
      await widths.fill(text);
      await page.locator('#submit').click();
      assert.match(await field.evaluate((i) => i.validationMessage), why);
      assert.match(await page.locator('#sizes-names').innerText(), why);
      assert.equal(await page.locator('li.row').count(), jobs, `${text}: no job was submitted`);
    };
    await refused('320, big', /“big” is not a width/);
    await refused('320, 0', /from 1 to 10000 pixels/);
    await refused('320, -5', /“-5” is not a width/);
    await refused('320, 320', /320 is listed twice/);
    await page.getByLabel('Also a WebP copy').check();
    await refused('100, 200, 300, 400, 500', /10 outputs .*at most 8/);
    await page.locator('#format').selectOption('webp');
    await refused('320', /already WebP/, page.locator('#sizes-webp'));
    await page.locator('#format').selectOption('');

    await widths.fill('320, 640, 1280');
    assert.equal(await page.locator('#sizes-names').innerText(),
      'Makes 6 outputs: w320, w640, w1280, w320-webp, w640-webp, w1280-webp.');
    // The pipeline runs on every size first; emptied, each size is made from the photo as it is.
    while (await page.locator('#steps > li').count()) await page.locator('#steps > li .remove').first().click();
    assert.ok(await page.locator('#steps-empty').isVisible());
    assert.equal(await page.evaluate(() => document.activeElement.id), 'add-step');
    const curl = await page.locator('#curl').textContent();
    assert.match(curl, /-F 'variants=\[\{"name":"w320","steps":\[\{"op":"resize","width":320\}\]\},/);
    assert.match(curl, /\{"name":"w1280-webp","steps":\[\{"op":"resize","width":1280\}\],"format":"webp"\}\]'/);
    assert.doesNotMatch(curl, /-F 'op=|-F 'steps=/, 'no shared steps are sent');
    assert.match(curl, /\/result\/w640-webp/);

    await page.locator('#submit').click();
    const newest = page.locator('li.row').first();
    await page.waitForFunction(() => document.querySelector('li.row')?.dataset.state === 'succeeded', null, { timeout: WAIT });
    assert.equal(await newest.getAttribute('data-file'), nameA);
    assert.match(await newest.locator('.row-status').innerText(), /^Result 320×\d+ px · .* · 6 sizes$/);
    assert.ok(await newest.evaluate((li) => li.classList.contains('selected')), 'the new job is the one shown');
    const id = await newest.getAttribute('data-job-id');

    const items = page.locator('#outputs > li');
    await items.nth(5).waitFor({ timeout: WAIT });
    assert.equal(await items.count(), 6);
    const listed = await items.evaluateAll((lis) => lis.map((li) => ({
      name: li.dataset.output, info: li.querySelector('.finfo').textContent,
      href: li.querySelector('a.dl').getAttribute('href'), file: li.querySelector('a.dl').getAttribute('download'),
    })));
    const stem = nameA.replace(/\.[^.]*$/, '');
    const expected = [[320, 'JPEG'], [640, 'JPEG'], [1280, 'JPEG'], [320, 'WebP'], [640, 'WebP'], [1280, 'WebP']];
    assert.deepEqual(listed.map((o) => o.name), ['w320', 'w640', 'w1280', 'w320-webp', 'w640-webp', 'w1280-webp']);
    for (const [i, o] of listed.entries()) {
      const [width, type] = expected[i];
      const m = /^(\d+)×(\d+) px · [\d.]+ (B|KB|MB) · (\w+)$/.exec(o.info);
      assert.ok(m, `${o.name}: ${o.info}`);
      assert.equal(Number(m[1]), width, `${o.name} is ${width} wide: ${o.info}`);
      // The height keeps the photo's aspect ratio.
      assert.ok(Math.abs(Number(m[2]) - (width * input.h) / input.w) <= 1, `${o.name}: ${o.info} from ${input.w}×${input.h}`);
      assert.equal(m[4], type, o.info);
      assert.equal(o.href, `/v1/jobs/${id}/result/${o.name}`);
      assert.equal(o.file, `${stem}-${o.name}.${type === 'WebP' ? 'webp' : 'jpg'}`);
      // Each link answers with the image, in its own type.
      const res = await fetch(`${GATEWAY}${o.href}`);
      assert.equal(res.status, 200, `${o.href}`);
      assert.equal(res.headers.get('content-type'), type === 'WebP' ? 'image/webp' : 'image/jpeg', o.href);
      const head = new Uint8Array(await res.arrayBuffer()).subarray(0, 12);
      if (type === 'WebP') assert.equal(Buffer.from(head).toString('latin1', 8, 12), 'WEBP', o.href);
      else assert.deepEqual([...head.subarray(0, 3)], [0xFF, 0xD8, 0xFF], o.href);
    }
    // The thumbnails show, and the After side shows the first size.
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#outputs img.thumb')];
      return imgs.length === 6 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: WAIT });
    assert.match(await page.locator('#cmp-after figcaption').textContent(), /^After\s*w320 · 320×\d+ px/);
    assert.ok(await page.locator('#detail-download').isHidden(), 'each size has its own link instead');
    assert.match(await page.locator('#job-meta').innerText(), /Sizes\s+w320, w640, w1280, w320-webp, w640-webp, w1280-webp/);
    const [download] = await Promise.all([page.waitForEvent('download'), items.nth(4).locator('a.dl').click()]);
    assert.match(download.suggestedFilename(), /\.webp$/);
    const saved = path.join(SHOTS, `download-${download.suggestedFilename()}`);
    await download.saveAs(saved);
    assert.equal(fs.readFileSync(saved).subarray(8, 12).toString('latin1'), 'WEBP', 'the download is a WebP');
    await page.mouse.move(0, 0);
    await page.locator('#detail-panel').scrollIntoViewIfNeeded();
    await shot('06-sizes.png');

    // Without sizes, a job needs a step again: the pipeline gets one back.
    await page.getByLabel('Also make several sizes').uncheck();
    assert.ok(await widths.isHidden());
    assert.equal(await page.locator('#steps > li').count(), 1);
    assert.equal(await page.locator('#steps select.op').inputValue(), 'resize');
    assert.ok(await page.locator('#steps-empty').isHidden());
  });

  it('serves Swagger UI at /docs/ under its own policy, and it renders', async () => {
    const res = await page.goto(`${GATEWAY}/docs/`);
    assert.equal(res.status(), 200);
    assertPageHeaders(await res.allHeaders(), '/docs/');
    await page.locator('.swagger-ui .info .title').waitFor({ timeout: WAIT });
    assert.match(await page.locator('.swagger-ui .info .title').innerText(), /pixmill/i);
    assert.ok(await page.locator('.swagger-ui .opblock').count() > 10, 'the operations are listed');
    await shot('05-swagger-ui.png');
  });

  it('offers the custom ops the gateway registers, with their parameters, and warns of one no worker serves', async () => {
    // The Rust harness registers examples/ops.json on this gateway and starts no worker for them.
    await page.goto(`${GATEWAY}/`);
    await page.waitForFunction(() => document.querySelector('#s1-op option[value="posterize"]'), null, { timeout: WAIT });
    await page.locator('#add-step').click();
    const op = page.locator('#steps select.op').last();
    const labels = await op.locator('option').allInnerTexts();
    assert.ok(labels.includes('posterize (custom)') && labels.includes('threshold (custom)'), labels.join(', '));
    await op.selectOption('posterize');
    const bits = page.locator('#steps li').last().locator('[data-param="bits"]');
    assert.equal(await bits.getAttribute('type'), 'number');
    assert.equal(await bits.getAttribute('max'), '8');
    await bits.fill('3');
    assert.match(await page.locator('#curl').textContent(), /"op":"posterize","bits":3/);
    await page.locator('#ops-panel').scrollIntoViewIfNeeded();
    await page.waitForFunction(() => [...document.querySelectorAll('#ops-warnings .ops-warning')]
      .some((w) => /no worker consumes \S+\.op\.posterize/.test(w.textContent)), null, { timeout: WAIT });
    assert.match(await page.locator('#ops-by-op').innerText(), /posterize \(custom\)/);
    await page.screenshot({ path: path.join(SHOTS, 'custom-ops.png'), fullPage: true });
    await page.locator('#steps li').last().locator('.remove').click();
  });

  it('used no resource outside the gateway, raised no script error and broke no CSP rule', () => {
    const origin = new URL(GATEWAY).origin;
    const outside = requests.filter((r) => !/^(data|blob):/.test(r.url) && new URL(r.url).origin !== origin);
    assert.deepEqual(outside, []);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspErrors, []);
  });
});

// A page on another site: the same loopback address by another name (`localhost` when the
// gateway is at 127.0.0.1, and the other way round), so Chromium sends Sec-Fetch-Site:
// cross-site and Origin as a visitor's browser would. It builds a PNG in the page and
// posts it to the gateway in a multipart form, which needs no preflight.
function crossSitePage(target) {
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
  return `<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<form id="f" method="post" enctype="multipart/form-data" action="${target}/v1/jobs?op=swap">
<input type="file" name="file" id="file"></form>
<script>
const bytes = Uint8Array.from(atob('${png}'), (c) => c.charCodeAt(0));
const t = new DataTransfer();
t.items.add(new File([bytes], 'x.png', { type: 'image/png' }));
document.getElementById('file').files = t.files;
document.getElementById('f').submit();
</script>`;
}

describe('a page on another site posting a form to the gateway', { timeout: 60_000 }, () => {
  let context, server, userDataDir, elsewhere;

  before(async () => {
    assert.ok(GATEWAY, 'PIXMILL_TEST_GATEWAY must name a running gateway');
    const gateway = new URL(GATEWAY);
    const otherHost = gateway.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
    const http = await import('node:http');
    server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(crossSitePage(GATEWAY));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    elsewhere = `http://${otherHost}:${server.address().port}/`;
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pixmill-browser-'));
    context = await launch(userDataDir);
  });

  after(async () => {
    await context?.close();
    server?.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  });

  it('is refused with 403 cross_site_request, and no job is made', async () => {
    const listed = async () => (await (await fetch(`${GATEWAY}/v1/jobs?limit=100`)).json()).jobs.map((j) => j.id);
    const before = await listed();
    const page = context.pages()[0] || (await context.newPage());
    const answered = page.waitForResponse((r) => r.url().startsWith(`${GATEWAY}/v1/jobs`) && r.request().method() === 'POST', { timeout: WAIT });
    await page.goto(elsewhere);
    const res = await answered;
    const headers = await res.request().allHeaders();
    assert.equal(headers['sec-fetch-site'], 'cross-site', 'Chromium called the page cross-site');
    assert.equal(res.status(), 403);
    const body = await res.json();
    assert.equal(body.error.code, 'cross_site_request', JSON.stringify(body));
    assert.deepEqual(await listed(), before, 'the refused form made no job');
  });
});

describe('upload page in Chromium, with PIXMILL_AUTH=required', {
  timeout: 180_000,
  skip: KEYED && KEY && WRONG_KEY ? false
    : 'set PIXMILL_TEST_GATEWAY_KEYED, PIXMILL_TEST_KEY and PIXMILL_TEST_WRONG_KEY to drive a gateway that requires keys',
}, () => {
  let context, page, userDataDir, jobId, shownResult;
  const requests = []; // every request the page made: { url, type, method, request }
  const pageErrors = [];
  const cspErrors = [];
  const [photo] = photos();
  const name = photo && path.basename(photo);
  const row = () => page.locator(`li.row[data-file="${name}"]`);
  const shot = (file) => page.screenshot({ path: path.join(SHOTS, file), fullPage: true });
  const secret = (key) => key.slice(key.indexOf('_', 4) + 1); // pmk_<id>_<secret>
  const publicId = (key) => key.slice(0, key.indexOf('_', 4));
  const stored = () => page.evaluate(() => ({
    key: sessionStorage.getItem('pixmill.apiKey'), session: sessionStorage.length, local: localStorage.length, cookie: document.cookie,
  }));
  const authorization = async (r) => (await r.request.allHeaders()).authorization;
  const startBrowser = async () => {
    context = await launch(userDataDir);
    page = context.pages()[0] || (await context.newPage());
    page.on('request', (r) => requests.push({ url: r.url(), type: r.resourceType(), method: r.method(), request: r }));
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.addInitScript(recordRowStates);
    await watchCsp(page, cspErrors);
  };

  before(async () => {
    assert.ok(photo && fs.existsSync(photo), `a photo is needed (PIXMILL_TEST_PHOTOS or var/photos; run make photos), got ${photo}`);
    fs.mkdirSync(SHOTS, { recursive: true });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pixmill-browser-keyed-'));
    await startBrowser();
  });

  after(async () => {
    await context?.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  });

  it('asks for an API key when the API answers 401', async () => {
    const res = await page.goto(`${KEYED}/`);
    assert.equal(res.status(), 200);
    // The operations panel's first reading is refused (credential_missing): the form appears.
    await page.locator('#signin-box').waitFor({ timeout: WAIT });
    assert.match(await page.locator('#signin-box').innerText(), /This gateway's API needs a key/);
    assert.ok(await page.locator('#auth-bar').isHidden());
    assert.equal(await page.evaluate(() => document.activeElement.id), 'api-key', 'the key field has the focus');
    await page.waitForFunction(() => /sign in/i.test(document.getElementById('ops-updated').textContent), null, { timeout: WAIT });
    assert.match(await page.locator('#curl').textContent(), /-H "Authorization: Bearer \$PIXMILL_API_KEY"/);
    await shot('11-keyed-sign-in.png');
  });

  it('refuses a wrong key, saying what was wrong, and keeps nothing of it', async () => {
    await page.locator('#api-key').fill(WRONG_KEY);
    await page.locator('#api-key').press('Enter');
    const error = page.locator('#signin-error');
    await error.waitFor({ timeout: WAIT });
    const text = await error.innerText();
    assert.match(text, /Key refused \(HTTP 401\)/);
    assert.match(text, /credential_invalid/);
    assert.match(text, /the API key is not valid/);
    assert.ok(!text.includes(secret(WRONG_KEY)) && !(await page.content()).includes(secret(WRONG_KEY)), 'the key is not shown');
    assert.equal(await page.locator('#api-key').inputValue(), '', 'the field is emptied');
    assert.ok(await page.locator('#signin-box').isVisible());
    assert.ok(await page.locator('#auth-bar').isHidden());
    assert.deepEqual(await stored(), { key: null, session: 0, local: 0, cookie: '' });
    await shot('12-keyed-wrong-key.png');
  });

  it('signs in with the right key, kept in sessionStorage only', async () => {
    await page.locator('#api-key').fill(KEY);
    await page.locator('#signin-submit').click();
    await page.locator('#auth-bar').waitFor({ timeout: WAIT });
    assert.ok(await page.locator('#signin-box').isHidden());
    assert.equal(await page.locator('#auth-id').innerText(), publicId(KEY), 'the bar names the key by its public id');
    assert.ok(!(await page.content()).includes(secret(KEY)), 'the page does not show the secret');
    assert.deepEqual(await stored(), { key: KEY, session: 1, local: 0, cookie: '' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'drop');
    // /v1/stats is for admin keys: the operations panel says so instead of its figures.
    await page.waitForFunction(() => /needs the admin scope/.test(document.getElementById('ops-updated').textContent),
      null, { timeout: WAIT });
  });

  it('uploads a photo and follows the job to succeeded through the events stream, read with fetch()', async () => {
    await page.locator('#file').setInputFiles([photo]);
    await page.locator('#picked > li img.thumb').waitFor();
    await page.getByLabel('Width (px) (optional)').fill('320');
    await page.getByLabel('Height (px) (optional)').fill('200');
    await page.locator('#submit').click();
    await row().waitFor();
    await page.waitForFunction((n) => document.querySelector(`li.row[data-file="${n}"]`)?.dataset.state === 'succeeded',
      name, { timeout: WAIT });
    assert.equal(await row().getAttribute('data-transport'), 'events');
    assert.match(await row().locator('.row-status').innerText(), /Result 320×200 px · [\d.]+ KB/);
    const states = await page.evaluate(() => window.__rowStates);
    assert.ok(states[name].includes('uploading'), `${name} showed its upload: ${states[name]}`);
    assert.equal(states[name].at(-1), 'succeeded');
    jobId = await row().getAttribute('data-job-id');

    const submit = requests.filter((r) => r.method === 'POST' && new URL(r.url).pathname === '/v1/jobs');
    assert.equal(submit.length, 1);
    assert.equal(await authorization(submit[0]), `Bearer ${KEY}`);
    const streams = requests.filter((r) => new URL(r.url).pathname === `/v1/jobs/${jobId}/events`);
    assert.ok(streams.length >= 1, 'the job was followed through its events stream');
    for (const r of streams) {
      assert.equal(r.type, 'fetch', 'the stream is read with fetch(), which sends the header');
      assert.equal(await authorization(r), `Bearer ${KEY}`);
    }
    assert.deepEqual(requests.filter((r) => r.type === 'eventsource'), [], 'no EventSource, which cannot send the key');
    assert.deepEqual(requests.filter((r) => r.url.includes('wait=')), [], 'no long-poll requests');
  });

  it('renders the result, fetched with the key, from an object URL', async () => {
    await row().locator('button.pick').click();
    await page.waitForFunction(() => {
      const i = document.querySelector('#cmp-after img.after');
      return i && i.complete && i.naturalWidth > 0;
    }, null, { timeout: WAIT });
    const after = await page.locator('#cmp-after img.after').evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight, src: i.src }));
    assert.deepEqual({ w: after.w, h: after.h }, { w: 320, h: 200 });
    assert.ok(after.src.startsWith('blob:'), `the result is shown from an object URL: ${after.src}`);
    shownResult = after.src;
    const fetched = requests.filter((r) => new URL(r.url).pathname === `/v1/jobs/${jobId}/result`);
    assert.ok(fetched.length >= 1);
    for (const r of fetched) {
      assert.equal(r.type, 'fetch');
      assert.equal(await authorization(r), `Bearer ${KEY}`);
    }
    await page.mouse.move(0, 0);
    await page.locator('#detail-panel').scrollIntoViewIfNeeded();
    await shot('13-keyed-before-after.png');
  });

  it('downloads the result and opens the job record with the key', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), row().locator('a.dl').click()]);
    assert.match(download.suggestedFilename(), /-pixmill\.jpg$/);
    const saved = path.join(SHOTS, `download-keyed-${download.suggestedFilename()}`);
    await download.saveAs(saved);
    assert.deepEqual([...fs.readFileSync(saved).subarray(0, 3)], [0xFF, 0xD8, 0xFF], 'the download is a JPEG');

    await page.locator('#job-meta a', { hasText: 'status JSON' }).click();
    await page.locator('#api-view').waitFor();
    await page.waitForFunction(() => /"state": "succeeded"/.test(document.getElementById('api-view-body').textContent),
      null, { timeout: WAIT });
    assert.equal(await page.locator('#api-view-title').innerText(), `GET /v1/jobs/${jobId}`);
    await shot('14-keyed-job-record.png');
    await page.locator('#api-view-close').click();
    assert.ok(await page.locator('#api-view').isHidden());
  });

  it('makes several sizes, their thumbnails and downloads fetched with the key', async () => {
    await page.locator('#file').setInputFiles([photo]);
    await page.locator('#picked > li img.thumb').waitFor();
    await page.getByLabel('Also make several sizes').check();
    await page.locator('#sizes-widths').fill('160, 240');
    // The 320×200 resize stays in the pipeline: both sizes are made from its result.
    await page.locator('#submit').click();
    const newest = page.locator('li.row').first();
    await page.waitForFunction(() => document.querySelector('li.row')?.dataset.state === 'succeeded', null, { timeout: WAIT });
    const sizesJob = await newest.getAttribute('data-job-id');
    assert.notEqual(sizesJob, jobId);
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#outputs img.thumb')];
      return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:'));
    }, null, { timeout: WAIT });
    const shown = await page.locator('#outputs img.thumb').evaluateAll((imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight]));
    assert.deepEqual(shown, [[160, 100], [240, 150]]);
    for (const output of ['w160', 'w240']) {
      const fetched = requests.filter((r) => new URL(r.url).pathname === `/v1/jobs/${sizesJob}/result/${output}`);
      assert.ok(fetched.length >= 1, `${output} was fetched`);
      for (const r of fetched) {
        assert.equal(r.type, 'fetch');
        assert.equal(await authorization(r), `Bearer ${KEY}`);
      }
    }
    const [download] = await Promise.all([page.waitForEvent('download'),
      page.locator('#outputs li[data-output="w240"] a.dl').click()]);
    assert.equal(download.suggestedFilename(), `${name.replace(/\.[^.]*$/, '')}-w240.jpg`);
    await page.getByLabel('Also make several sizes').uncheck();
  });

  it('signs out: the key is forgotten and results fetched with it are let go', async () => {
    await page.locator('#sign-out').click();
    await page.locator('#signin-box').waitFor();
    assert.ok(await page.locator('#auth-bar').isHidden());
    assert.deepEqual(await stored(), { key: null, session: 0, local: 0, cookie: '' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'api-key');
    assert.match(await page.locator('#cmp-after').innerText(), /Sign in to see the result/);
    const readable = await page.evaluate((u) => fetch(u).then(() => true, () => false), shownResult);
    assert.equal(readable, false, 'the object URL of the result was revoked');
    await shot('15-keyed-signed-out.png');

    // Signing in again brings the result back.
    await page.locator('#api-key').fill(KEY);
    await page.locator('#api-key').press('Enter');
    await page.locator('#auth-bar').waitFor({ timeout: WAIT });
    await page.waitForFunction(() => {
      const i = document.querySelector('#cmp-after img.after');
      return i && i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:');
    }, null, { timeout: WAIT });
  });

  it('forgets the key when the browser session ends', async () => {
    await context.close();
    await startBrowser(); // the same profile, a new browser session
    await page.goto(`${KEYED}/`);
    await page.locator('#signin-box').waitFor({ timeout: WAIT });
    assert.deepEqual(await stored(), { key: null, session: 0, local: 0, cookie: '' });
  });

  it('shows the Operations panel\'s figures to an admin key', { skip: !ADMIN_KEY && 'PIXMILL_TEST_ADMIN_KEY is not set' }, async () => {
    await page.locator('#api-key').fill(ADMIN_KEY);
    await page.locator('#api-key').press('Enter');
    await page.locator('#auth-bar').waitFor({ timeout: WAIT });
    await page.waitForFunction(() => /^Updated /.test(document.getElementById('ops-updated').textContent), null, { timeout: WAIT });
    assert.match(await page.locator('#ops-workers').innerText(), /^\d+$/);
    assert.match(await page.locator('#ops-latency').innerText(), /ms/);
    await page.locator('#ops-panel').scrollIntoViewIfNeeded();
    await shot('16-keyed-operations.png');
    // Its links open with the key too.
    await page.locator('#ops-note a', { hasText: '/metrics' }).click();
    await page.waitForFunction(() => /# TYPE /.test(document.getElementById('api-view-body').textContent), null, { timeout: WAIT });
    await page.locator('#api-view-close').click();
    const admin = requests.filter((r) => new URL(r.url).pathname === '/v1/stats' && r.type === 'fetch').at(-1);
    assert.equal(await authorization(admin), `Bearer ${ADMIN_KEY}`);
  });

  it('serves Swagger UI at /docs, with its own Authorize button for the bearer key', async () => {
    const res = await page.goto(`${KEYED}/docs/`);
    assert.equal(res.status(), 200);
    await page.locator('button.authorize').waitFor({ timeout: WAIT });
  });

  it('never put the key in a URL, used no resource outside the gateway and raised no script error', () => {
    const origin = new URL(KEYED).origin;
    const secrets = [KEY, WRONG_KEY, ADMIN_KEY].filter(Boolean).map(secret);
    assert.deepEqual(requests.filter((r) => secrets.some((s) => r.url.includes(s))).map((r) => r.url), []);
    const outside = requests.filter((r) => !/^(data|blob):/.test(r.url) && new URL(r.url).origin !== origin);
    assert.deepEqual(outside.map((r) => r.url), []);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspErrors, []);
  });
});
