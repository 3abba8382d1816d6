// Checks the gateway's CORS answers as a browser applies them, in headless Chromium.
//
//   npm ci --prefix tests/browser
//   node tests/browser/cors.mjs <page_url> <other_page_url> <gateway_base_url> <access_token>
//
// <page_url> is a page on an origin the gateway allows (its `cors.allow_origins`); from it,
// fetch() calls a JWT route of the gateway (another origin) with Authorization and reads
// X-Request-Id and RateLimit from the answer (readable only if exposed), reads the JSON of a
// 401, and calls until a 429 to read its Retry-After. <other_page_url> is a page on an origin
// the gateway does not allow: its fetch() calls must fail with a TypeError, as CORS blocks
// them. The route must be `/api/courses/`, with a rate limit of a few requests. Uses Debian's
// Chromium (`apt-get install chromium`), or the browser the CHROMIUM variable names. Prints
// one line per check; exits 1 on the first failure.

import { chromium } from 'playwright-core';

const [pageUrl, otherUrl, base, token] = process.argv.slice(2);
if (!pageUrl || !otherUrl || !base || !token) {
  console.error(
    'usage: node tests/browser/cors.mjs <page_url> <other_page_url> <gateway_base_url> <access_token>',
  );
  process.exit(2);
}
const api = new URL(base).origin;
const ROUTE = '/api/courses/';
const TIMEOUT = 30_000;

class CheckFailed extends Error {}

function ok(message) {
  console.log(`ok - ${message}`);
}

/** Passes, or fails saying what was found instead. */
function check(condition, message, found) {
  if (!condition) throw new CheckFailed(`${message}; found: ${JSON.stringify(found)}`);
  ok(message);
}

const consoleLines = [];

async function openPage(context, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (msg) => consoleLines.push(`${url}: ${msg.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`${url}: page error: ${e.message}`));
  const response = await page.goto(url);
  check(response?.status() === 200, `GET ${url} answers 200`, response?.status());
  const origin = await page.evaluate(() => window.location.origin);
  check(origin !== api, `the page's origin ${origin} is not the gateway's ${api}`, origin);
  return { page, origin };
}

async function allowedOrigin(context) {
  const { page, origin } = await openPage(context, pageUrl);

  // A JWT route with Authorization: a preflighted request, answered with readable fields.
  const first = await page.evaluate(
    async ({ url, token }) => {
      const r = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
      const body = await r.json();
      return {
        status: r.status,
        requestId: r.headers.get('x-request-id'),
        rateLimit: r.headers.get('ratelimit'),
        policy: r.headers.get('ratelimit-policy'),
        vary: r.headers.get('vary'),
        upstream: body.upstream,
        sentOrigin: (body.headers?.origin ?? [])[0],
        user: (body.headers?.['x-user-name'] ?? [])[0],
      };
    },
    { url: api + ROUTE, token },
  );
  check(first.status === 200, `GET ${ROUTE} with Authorization from ${origin} answers 200`, first);
  check(
    first.user === 'demo',
    "the gateway authenticated the page's token (the upstream got X-User-Name: demo)",
    first.user,
  );
  check(first.sentOrigin === origin, `the browser sent Origin: ${origin}`, first.sentOrigin);
  check(
    typeof first.requestId === 'string' && first.requestId.length > 0,
    `the page reads X-Request-Id (${first.requestId})`,
    first.requestId,
  );
  check(
    typeof first.rateLimit === 'string' && first.rateLimit.includes('"route";r='),
    `the page reads RateLimit (${first.rateLimit})`,
    first.rateLimit,
  );
  check(
    typeof first.policy === 'string' && first.policy.includes('"route"'),
    `the page reads RateLimit-Policy (${first.policy})`,
    first.policy,
  );
  // Vary is neither safelisted nor exposed: the browser hides it, so what the page read above
  // it could read because the gateway exposed it.
  check(first.vary === null, 'a field the gateway does not expose stays hidden (Vary)', first.vary);

  // Without a token: the 401's JSON is readable.
  const unauthorized = await page.evaluate(async (url) => {
    const r = await fetch(url);
    const body = await r.json();
    return { status: r.status, body, requestId: r.headers.get('x-request-id') };
  }, api + ROUTE);
  check(unauthorized.status === 401, `GET ${ROUTE} without a token answers 401`, unauthorized);
  check(
    unauthorized.body.code === 'not_authenticated',
    `the page reads the 401's JSON code (${unauthorized.body.code})`,
    unauthorized.body,
  );
  check(
    unauthorized.body.request_id === unauthorized.requestId,
    "the 401's request_id matches its readable X-Request-Id",
    unauthorized,
  );

  // Until the limit refuses: the 429's Retry-After is readable.
  const limited = await page.evaluate(
    async ({ url, token }) => {
      const statuses = [];
      for (let i = 0; i < 10; i++) {
        const r = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
        statuses.push(r.status);
        if (r.status === 429) {
          const body = await r.json();
          return {
            statuses,
            retryAfter: r.headers.get('retry-after'),
            rateLimit: r.headers.get('ratelimit'),
            code: body.code,
          };
        }
        await r.arrayBuffer();
      }
      return { statuses };
    },
    { url: api + ROUTE, token },
  );
  check(
    limited.statuses.at(-1) === 429,
    `calls until the limit end in 429 (${limited.statuses.join(', ')})`,
    limited.statuses,
  );
  check(limited.code === 'throttled', `the page reads the 429's JSON code (${limited.code})`, limited);
  check(
    Number(limited.retryAfter) > 0,
    `the page reads the 429's Retry-After (${limited.retryAfter} s)`,
    limited.retryAfter,
  );
  check(
    typeof limited.rateLimit === 'string' && limited.rateLimit.includes('"route";r=0'),
    `the page reads the 429's RateLimit (${limited.rateLimit})`,
    limited.rateLimit,
  );
  await page.close();
}

async function disallowedOrigin(context) {
  const { page, origin } = await openPage(context, otherUrl);
  const attempts = await page.evaluate(
    async ({ url, token }) => {
      const attempt = async (init) => {
        try {
          const r = await fetch(url, init);
          return { status: r.status };
        } catch (e) {
          return { error: e.name, message: e.message };
        }
      };
      return {
        // Preflighted: the gateway refuses the preflight, the request is never sent.
        preflighted: await attempt({ headers: { Authorization: `Bearer ${token}` } }),
        // A simple request is sent, but its answer allows no origin: the page may not read it.
        simple: await attempt({}),
      };
    },
    { url: api + ROUTE, token },
  );
  for (const [kind, result] of Object.entries(attempts)) {
    check(
      result.error === 'TypeError',
      `a ${kind} fetch from ${origin}, which is not allowed, fails with a TypeError (${result.message})`,
      result,
    );
  }
  await page.close();
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
  });
  try {
    const context = await browser.newContext();
    await allowedOrigin(context);
    await disallowedOrigin(context);
  } finally {
    await browser.close();
  }
  const blocked = consoleLines.filter((line) => /CORS/i.test(line));
  if (blocked.length) console.log(`# the browser said:\n#   ${blocked.join('\n#   ')}`);
  console.log('all CORS checks passed');
}

main().catch((e) => {
  console.error(`FAIL: ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  if (consoleLines.length) console.error(`  the pages' console:\n  ${consoleLines.join('\n  ')}`);
  process.exitCode = 1;
});
