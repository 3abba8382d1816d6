// Checks the gateway's API documentation pages in headless Chromium.
//
//   npm ci --prefix tests/browser
//   node tests/browser/docs.mjs <gateway_base_url> <access_token>
//
// Opens Swagger UI (/api/docs/) and ReDoc (/api/redoc/), with every request to another origin
// blocked, and checks that both render the operations of the demo services, that "Try it out"
// with the bearer token reaches the gateway, and that the pages raise no error and no
// Content-Security-Policy violation. Uses Debian's Chromium (`apt-get install chromium`), or
// the browser the CHROMIUM variable names. Prints one line per check; exits 1 on the first
// failure.

import { chromium } from 'playwright-core';

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: node tests/browser/docs.mjs <gateway_base_url> <access_token>');
  process.exit(2);
}
const origin = new URL(base).origin;
const url = (path) => new URL(path, base).href;
const TIMEOUT = 30_000;

const LESSONS = '/api/courses/{course_id}/lessons/';
// The paths each page must show: one per demo service.
const SERVICE_PATHS = { courses: '/api/courses/', accounts: '/api/users/' };

class CheckFailed extends Error {}

function ok(message) {
  console.log(`ok - ${message}`);
}

/** Passes, or fails saying what was found instead. */
function check(condition, message, found) {
  if (!condition) throw new CheckFailed(`${message}; found: ${found}`);
  ok(message);
}

/** Errors, CSP violations and off-origin requests seen since the last call, as messages. */
function problemsSince(state) {
  const problems = [
    ...state.blocked.map((u) => `a request left the gateway's origin: ${u}`),
    ...state.errors,
  ];
  state.blocked.length = 0;
  state.errors.length = 0;
  return problems;
}

function checkClean(state, what) {
  const problems = problemsSince(state);
  if (problems.length) throw new CheckFailed(`${what}:\n  ${problems.join('\n  ')}`);
  ok(`${what}: no off-origin request, page error or CSP violation`);
}

async function openPage(context, state, path) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => state.errors.push(`page error on ${path}: ${e.message}`));
  page.on('console', (msg) => {
    if (/Content.Security.Policy/i.test(msg.text())) {
      state.errors.push(`CSP violation on ${path}: ${msg.text()}`);
    }
  });
  const response = await page.goto(url(path));
  check(response?.status() === 200, `GET ${path} answers 200`, response?.status());
  const csp = (await response.allHeaders())['content-security-policy'];
  check(Boolean(csp), `GET ${path} sends a Content-Security-Policy`, 'none');
  return page;
}

async function swaggerUi(context, state) {
  const page = await openPage(context, state, '/api/docs/');

  await page.waitForSelector('.opblock');
  // Swagger UI puts zero-width spaces into the displayed path; data-path holds it whole.
  const paths = await page.$$eval('.opblock .opblock-summary-path', (els) =>
    els.map((e) => e.getAttribute('data-path') || e.textContent.replace(/\u200b/g, '')),
  );
  for (const [service, path] of Object.entries(SERVICE_PATHS)) {
    check(paths.includes(path), `Swagger UI lists ${path} (${service} service)`, paths.join(' '));
  }

  await page.click('.scheme-container button.authorize');
  const bearer = page.locator('.dialog-ux .auth-container').filter({ hasText: 'bearerAuth' });
  await bearer.locator('input').first().fill(token);
  await bearer.locator('button.authorize').click();
  // Once applied, the scheme offers "Logout" instead.
  await bearer.locator('button', { hasText: 'Logout' }).waitFor();
  await page.click('.dialog-ux .close-modal');
  ok('Swagger UI: authorized with the bearer token');

  const operation = page.locator('.opblock-get', {
    has: page.locator(`.opblock-summary-path[data-path="${LESSONS}"]`),
  });
  await operation.locator('.opblock-summary').first().click();
  await operation.locator('button.try-out__btn').click();
  await operation.locator('tr[data-param-name="course_id"] input').fill('1');

  const lessons = url('/api/courses/1/lessons/');
  const lessonsPath = new URL(lessons).pathname;
  // Any origin: one other than the gateway's is reported, rather than waited for in vain.
  const sent = page.waitForRequest((r) => new URL(r.url()).pathname === lessonsPath);
  await operation.locator('button.execute').click();
  const request = await sent;
  check(request.url() === lessons, `Try it out sent GET ${lessons}`, request.url());
  const authorization = (await request.allHeaders()).authorization ?? '';
  check(
    authorization === `Bearer ${token}`,
    'Try it out sent Authorization: Bearer <token>',
    authorization || 'no Authorization header',
  );
  // The live response's row, not the table's "Code" header.
  const status = operation.locator(
    '.responses-wrapper .live-responses-table tbody .response-col_status',
  );
  await status.waitFor();
  const shown = (await status.innerText()).trim();
  check(/^200\b/.test(shown), 'Swagger UI shows the response status 200', shown);

  checkClean(state, 'Swagger UI');
  await page.close();
}

async function redoc(context, state) {
  const page = await openPage(context, state, '/api/redoc/');
  const wanted = Object.values(SERVICE_PATHS);
  // The operations are rendered once every path is in the document (some only in drop-downs).
  await page.waitForFunction(
    (paths) => paths.every((p) => document.body.textContent.includes(p)),
    wanted,
    { timeout: TIMEOUT },
  );
  for (const [service, path] of Object.entries(SERVICE_PATHS)) {
    ok(`ReDoc shows ${path} (${service} service)`);
  }
  // Let ReDoc start its search worker, which the CSP must allow.
  await page.waitForTimeout(1000);
  checkClean(state, 'ReDoc');
  await page.close();
}

const state = { blocked: [], errors: [] };

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
  });
  try {
    const context = await browser.newContext();
    // Only the gateway: anything else (a CDN, a validator, fonts) is aborted and reported.
    await context.route('**/*', (route) => {
      const target = route.request().url();
      if (target.startsWith('data:') || new URL(target).origin === origin) {
        return route.continue();
      }
      state.blocked.push(target);
      return route.abort('blockedbyclient');
    });
    await swaggerUi(context, state);
    await redoc(context, state);
  } finally {
    await browser.close();
  }
  console.log('all documentation page checks passed');
}

main().catch((e) => {
  console.error(`FAIL: ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  // What went wrong on the page often explains a time-out.
  const problems = problemsSince(state);
  if (problems.length) console.error(`  seen meanwhile:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
});
