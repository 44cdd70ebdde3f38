/**
 * The web dashboard in a real browser (Debian's Chromium, driven by playwright-core) against a real stack with the
 * scripted runtime: sign in with a key, start a session from the page, watch its timeline grow without a reload,
 * decide a tool call from the inbox, render the spend chart, and run and pause a schedule. Screenshots go to test-artifacts/dashboard/.
 * A second part seeds 10,000 sessions and prints how long the fleet's first page takes to render.
 *
 * Chromium comes from apt (.ci/run installs it); in CI a missing binary fails this file, elsewhere it is skipped.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DASHBOARD_CSP } from '../api/routes/dashboard.routes';
import { newId } from '../db/ids';
import { sessions } from '../db/schema/index';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts/dashboard';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium && process.env.CI) {
  throw new Error(`${CHROMIUM} is missing: the dashboard test needs Debian's chromium package (.ci/run installs it)`);
}
if (!hasChromium) console.warn(`[dashboard] ${CHROMIUM} is missing: skipping the browser tests (apt-get install chromium)`);

let stack: Stack;
let browser: Browser;
let agentId: string;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  const agent = await stack.call('POST', '/v1/agents', {
    name: 'dashboard agent',
    model: 'scripted',
    runtime: { type: 'scripted' },
    tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' },
  });
  expect(agent.status).toBe(200);
  agentId = agent.body.id;
  if (hasChromium) {
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-background-networking'] });
  }
});

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A fresh page (its own sessionStorage) that fails the test on any script error or CSP violation. */
async function openPage(): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) problems.push(`console error: ${msg.text()}`);
  });
  return { page, problems };
}

/** the key the page keeps in sessionStorage (the test has no DOM types: the function runs in the page) */
const storedKey = (page: Page) => page.evaluate(() => (globalThis as any).sessionStorage.getItem('agentplane.apiKey') as string | null);

async function signIn(page: Page, key: string) {
  await page.goto(`${stack.url}/ui/`);
  await page.fill('input[name=key]', key);
  await page.click('form.sign-in button[type=submit]');
  await page.waitForSelector('nav:not([hidden])');
}

describe('the dashboard files', () => {
  it('serves the page, its modules and its stylesheet with their content types and the CSP', async () => {
    for (const [path, type] of [
      ['/ui/', 'text/html'],
      ['/ui/app.js', 'text/javascript'],
      ['/ui/views/session.js', 'text/javascript'],
      ['/ui/style.css', 'text/css'],
    ]) {
      const res = await fetch(`${stack.url}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toContain(type);
      expect(res.headers.get('content-security-policy'), path).toBe(DASHBOARD_CSP);
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
    }
    expect(DASHBOARD_CSP).toContain("script-src 'self'");
    expect(DASHBOARD_CSP).not.toContain('unsafe-inline');
  });

  it('redirects / to the dashboard and answers an unknown or escaping path with a 404', async () => {
    const root = await fetch(`${stack.url}/`, { redirect: 'manual' });
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/ui/');
    for (const path of ['/ui/nope.js', '/ui/%2e%2e/package.json', '/ui/..%2fpackage.json', '/ui/views/../../api/main.ts']) {
      const res = await fetch(`${stack.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.text(), path).not.toContain('"dependencies"');
    }
  });

  it('builds its DOM from text: no markup APIs anywhere in the dashboard code', async () => {
    const files = (await readdir('dashboard', { recursive: true })).filter((f) => f.endsWith('.js'));
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      expect(await readFile(join('dashboard', file), 'utf8'), file).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
    }
  });

  it('needs no key for the page itself, while the API behind it still does', async () => {
    expect((await fetch(`${stack.url}/ui/`)).status).toBe(200);
    expect((await fetch(`${stack.url}/v1/sessions`)).status).toBe(401);
  });
});

describe.skipIf(!hasChromium)('the dashboard in Chromium', () => {
  it('signs in, starts a session, streams its timeline live, and takes a decision from the inbox', { timeout: 180_000 }, async () => {
    const { page, problems } = await openPage();

    // a wrong key is refused and nothing is kept
    await page.goto(`${stack.url}/ui/`);
    await page.fill('input[name=key]', 'ap_not_a_real_key_000000000');
    await page.click('form.sign-in button[type=submit]');
    await page.waitForSelector('form.sign-in .error');
    expect(await storedKey(page)).toBeNull();

    await page.fill('input[name=key]', stack.adminKey);
    await page.click('form.sign-in button[type=submit]');
    await page.waitForSelector('nav:not([hidden])');
    expect(await storedKey(page)).toBe(stack.adminKey);

    // start a session from the fleet page
    await page.click('details.start summary');
    await page.waitForSelector(`details.start select[name=agent] option[value="${agentId}"]`, { state: 'attached' });
    await page.selectOption('details.start select[name=agent]', agentId);
    await page.fill('details.start input[name=title]', 'from the browser');
    await page.fill('details.start textarea[name=message]', 'say hello from the browser\ncost 0.25');
    await page.click('details.start button[type=submit]');
    await page.waitForURL(/#\/sessions\/sesn_/);
    const sessionId = new URL(page.url()).hash.replace('#/sessions/', '');
    await page.waitForSelector('.timeline li[data-type="agent.message"] >> text=hello from the browser');
    await waitForStatus(stack, sessionId, 'idle');

    // a new event appears in the same document: no navigation, no reload
    await page.waitForSelector('main[data-ready]');
    await page.evaluate(() => ((globalThis as any).__sameDocument = true));
    const marker = `live marker ${Math.random().toString(36).slice(2)}`;
    // event content is attacker-controlled: it must show as text, never run
    const hostile = '<img src=x onerror="window.__xss=1"><b>bold</b>';
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: `say ${marker}\nsay ${hostile}` }] })).status).toBe(200);
    await page.waitForSelector(`.timeline li[data-type="agent.message"] >> text=${marker}`);
    await page.waitForSelector('.timeline li[data-type="agent.message"] >> text=onerror');
    expect(await page.evaluate(() => (globalThis as any).__sameDocument)).toBe(true);
    expect(await page.evaluate(() => (globalThis as any).__xss)).toBeUndefined();
    expect(await page.locator('.timeline img, .timeline b').count()).toBe(0);
    await page.waitForSelector('.summary .cost >> text=$0.25');
    // the summary names the agent and how the session was started (the trigger is an object: never "[object Object]")
    const summaryText = await page.locator('.summary').textContent();
    expect(summaryText).toContain(`dashboard agent (${agentId}) v1`);
    expect(summaryText).toMatch(/Started bykey_\w+ \(api\)/);
    expect(summaryText).not.toContain('[object Object]');
    await page.screenshot({ path: `${ARTIFACTS}/session.png`, fullPage: true });

    // a write the policy asks about waits in the inbox; approve it there
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: 'tool write /x\nsay written' }] })).status).toBe(200);
    await waitForStatus(stack, sessionId, 'requires_action');
    const [approval] = (await stack.call('GET', `/v1/approvals?session_id=${sessionId}`)).body.data;
    await page.click('nav a[data-view=approvals]');
    const card = page.locator(`article.approval[data-tool-use="${approval.tool_use_id}"]`);
    await card.waitFor();
    expect(await card.locator('pre').textContent()).toContain('/x');
    await page.screenshot({ path: `${ARTIFACTS}/approvals.png`, fullPage: true });
    await card.locator('button.approve').click();
    await eventually(async () => ((await eventsOf(stack, sessionId)).some((e) => e.type === 'user.tool_confirmation' && e.tool_use_id === approval.tool_use_id && e.result === 'allow') ? true : undefined), {
      what: 'the confirmation from the dashboard',
    });
    await waitForStatus(stack, sessionId, 'idle');
    expect((await eventsOf(stack, sessionId)).some((e) => e.type === 'agent.message' && e.content[0].text === 'written')).toBe(true);
    // the inbox refreshes itself: the decided call leaves it
    await card.waitFor({ state: 'detached' });

    // the fleet lists the session with its live status
    await page.click('nav a[data-view=fleet]');
    const row = page.locator(`tr[data-session="${sessionId}"]`);
    await row.waitFor();
    await row.locator('[data-status=idle]').waitFor();
    expect(await row.textContent()).toContain('from the browser');
    // people look for agents by name: the row names it, with its id beside the name
    expect(await row.locator(`td[data-agent="${agentId}"]`).textContent()).toBe(`dashboard agent (${agentId}) v1`);
    await page.screenshot({ path: `${ARTIFACTS}/fleet.png`, fullPage: true });
    // statuses on the fleet page are live: a call waiting for approval shows, then its end, without a reload
    await page.evaluate(() => ((globalThis as any).__sameDocument = 'fleet'));
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: 'tool write /y' }] })).status).toBe(200);
    await row.locator('[data-status=requires_action]').waitFor();
    const [second] = (await stack.call('GET', `/v1/approvals?session_id=${sessionId}`)).body.data;
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: second.tool_use_id, result: 'deny' }] })).status).toBe(200);
    await row.locator('[data-status=idle]').waitFor();
    expect(await page.evaluate(() => (globalThis as any).__sameDocument)).toBe('fleet');
    // a status filter that excludes it
    await page.goto(`${stack.url}/ui/#/fleet?status=terminated`);
    await page.waitForSelector('main[data-ready]');
    expect(await row.count()).toBe(0);

    // spend per agent per day, from the ledger
    await page.goto(`${stack.url}/ui/#/spend?group_by=agent&days=7`);
    await page.waitForSelector('main[data-ready] .chart svg rect');
    expect(await page.locator('.chart .legend').textContent()).toContain(`dashboard agent (${agentId})`);
    expect(await page.locator('table.totals').textContent()).toContain(`dashboard agent (${agentId})`);
    expect(await page.locator('table.totals').textContent()).toContain('$0.25');
    await page.screenshot({ path: `${ARTIFACTS}/spend.png`, fullPage: true });

    // agents with their policy, and the audit log with the chain verified
    await page.click('nav a[data-view=agents]');
    await page.click(`details.agent[data-agent="${agentId}"] summary`);
    await page.waitForSelector(`details.agent[data-agent="${agentId}"] .versions td >> text=v1`);
    expect(await page.locator(`details.agent[data-agent="${agentId}"] .policy`).first().textContent()).toContain('ask write');
    await page.click('nav a[data-view=audit]');
    await page.waitForSelector('table.audit td >> text=tool.approval');
    await page.fill('form.filters input[name=action]', 'tool.approval');
    await page.click('form.filters button[type=submit]');
    await page.waitForURL(/action=tool.approval/);
    await page.waitForSelector('.pager >> text=End of the log');
    const actions = await page.locator('table.audit tbody tr td:nth-child(4)').allTextContents();
    expect(actions.length).toBe(2);
    expect(new Set(actions)).toEqual(new Set(['tool.approval']));
    await page.click('text=Verify chain');
    await page.waitForSelector('.verdict .ok >> text=Chain intact');

    // the key is the tab's: signing out forgets it
    await page.click('#logout');
    await page.waitForSelector('form.sign-in');
    expect(await storedKey(page)).toBeNull();
    expect(problems.join('\n')).toBe('');
    await page.context().close();
  });

  it('lists a schedule with its timetable, runs it now, shows the run with status and cost, and pauses it', { timeout: 180_000 }, async () => {
    // a cron that fires only on 29 February at midnight: nothing fires during the test except what the page starts
    const created = await stack.call('POST', '/v1/schedules', {
      agent: agentId,
      title: 'leap day report',
      prompt: 'say scheduled hello\ncost 0.10',
      spec: { cron: ['0 0 29 2 *'], time_zone: 'Europe/Berlin' },
      policies: { overlap: 'buffer_one', catchup_window_seconds: 60 },
    });
    expect(created.status).toBe(200);
    const scheduleId = created.body.id;
    expect((await stack.call('GET', `/v1/schedules/${scheduleId}/runs`)).body.data).toEqual([]);

    const { page, problems } = await openPage();
    await signIn(page, stack.adminKey);
    await page.click('nav a[data-view=schedules]');
    const card = page.locator(`article.schedule[data-schedule="${scheduleId}"]`);
    await card.waitFor();
    await card.locator('[data-state=active]').waitFor();
    await card.locator('dd >> text=cron 0 0 29 2 *').waitFor();
    const facts = await card.locator('dl').textContent();
    expect(facts).toContain('Europe/Berlin');
    expect(facts).toContain('buffer_one');
    expect(await card.locator('header').textContent()).toContain('dashboard agent');
    // the next run the page shows is the one Temporal reports
    const nextRun: string = (await stack.call('GET', `/v1/schedules/${scheduleId}`)).body.info.next_run_times[0];
    expect(new Date(nextRun).getUTCMonth()).toBe(1);
    const shownNext = await page.evaluate((iso) => new Date(iso).toLocaleString(), nextRun);
    expect(facts).toContain(shownNext);
    await card.locator('td.empty >> text=No runs yet.').waitFor();

    // run now: a session of the agent starts, and shows in the schedule's history with its status and cost
    await card.locator('button.trigger').click();
    const run = card.locator('table.runs tr[data-session]');
    await run.first().waitFor();
    const runs = (await stack.call('GET', `/v1/schedules/${scheduleId}/runs`)).body.data;
    expect(runs).toHaveLength(1);
    const sessionId = runs[0].session_id;
    expect(await run.first().getAttribute('data-session')).toBe(sessionId);
    await waitForStatus(stack, sessionId, 'idle');
    await run.first().locator('[data-status=idle]').waitFor();
    await run.first().locator('td.num >> text=$0.10').waitFor();
    expect(await run.count()).toBe(1);

    // pause: the card says so, and so does the API
    await card.locator('button.pause >> text=Pause').click();
    await card.locator('[data-state=paused]').waitFor();
    await card.locator('dd >> text=none while paused').waitFor();
    expect((await stack.call('GET', `/v1/schedules/${scheduleId}`)).body.state.paused).toBe(true);
    await card.locator('button.pause >> text=Unpause').waitFor();
    await page.screenshot({ path: `${ARTIFACTS}/schedules.png`, fullPage: true });

    // the run links to its session page
    await run.first().locator('a').click();
    await page.waitForURL(new RegExp(`#/sessions/${sessionId}$`));
    await page.waitForSelector('.timeline li[data-type="agent.message"] >> text=scheduled hello');

    // and unpause from the page brings it back
    await page.click('nav a[data-view=schedules]');
    await card.locator('button.pause >> text=Unpause').click();
    await card.locator('[data-state=active]').waitFor();
    expect((await stack.call('GET', `/v1/schedules/${scheduleId}`)).body.state.paused).toBe(false);
    expect(problems.join('\n')).toBe('');
    await page.context().close();
  });

  it('renders the first fleet page of 10,000 sessions from one indexed query', { timeout: 120_000 }, async () => {
    const team = await stack.newTeam();
    const key = await team.key('admin');
    const statuses = ['idle', 'running', 'requires_action', 'terminated'];
    const rows = Array.from({ length: 10_000 }, (_, i) => ({
      id: newId('sesn'),
      teamId: team.teamId,
      agentId: `agent_seed${i % 20}`,
      agentVersion: 1,
      runtime: i % 3 === 0 ? 'opencode' : 'scripted',
      title: `seeded ${i}`,
      metadata: {},
      status: statuses[i % 4]!,
      initiatorKeyId: 'key_seed',
      trigger: 'api',
      budget: {},
      costMicros: i * 10,
    }));
    for (let i = 0; i < rows.length; i += 1000) await stack.db.db.insert(sessions).values(rows.slice(i, i + 1000));
    await stack.db.db.execute(sql`analyze sessions`);

    // the fleet query, unfiltered and filtered, reads an index in id order and stops after a page: no scan of the
    // table, no sort (which index depends on the statistics: here the team is nearly the whole table)
    for (const filter of [sql``, sql`and status = 'running'`, sql`and agent_id = 'agent_seed3'`]) {
      const plan = await stack.db.db.execute(sql`explain select * from sessions where team_id = ${team.teamId} ${filter} and archived_at is null order by id desc limit 50`);
      const text = (plan as any).rows.map((r: any) => r['QUERY PLAN']).join('\n');
      expect(text, text).toMatch(/Limit[\s\S]*Index Scan Backward using sessions_\w+/);
      expect(text, text).not.toMatch(/Seq Scan|Sort/);
    }

    const { page, problems } = await openPage();
    await signIn(page, key);
    const started = performance.now();
    await page.goto(`${stack.url}/ui/#/fleet?status=`);
    await page.waitForSelector('main[data-ready] table.sessions tbody tr[data-session]');
    const ms = performance.now() - started;
    console.log(`[dashboard] fleet of 10,000 sessions: first page of 50 rendered in ${Math.round(ms)} ms`);
    const firstPage = await page.locator('tr[data-session]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-session')));
    expect(firstPage).toHaveLength(50);
    expect(firstPage[0]).toBe(rows.map((r) => r.id).sort().at(-1));

    // the next page is the next 50 by cursor, none repeated
    await page.click('.pager button >> text=Next');
    await page.waitForURL(/page=/);
    await page.waitForSelector('main[data-ready] tr[data-session]');
    const secondPage = await page.locator('tr[data-session]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-session')));
    expect(secondPage).toHaveLength(50);
    expect(secondPage.filter((id) => firstPage.includes(id))).toEqual([]);
    await page.click('.pager button >> text=Previous');
    await page.waitForSelector('main[data-ready] tr[data-session]');
    await eventually(async () => ((await page.locator('tr[data-session]').first().getAttribute('data-session')) === firstPage[0] ? true : undefined), { what: 'the first page again' });
    expect(problems.join('\n')).toBe('');
    await page.context().close();
  });
});
