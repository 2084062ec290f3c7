// A billing story through the official Node.js client chargebee@1.3.7 (Chargebee API v1), unmodified,
// against a running billhive: driven by tests/sdk/test_sdk_node.py.
//
// Environment: CHARGEBEE_MODULE (the installed package's folder), BILLHIVE_PORT, BILLHIVE_API_KEY (a key of
// a test site with metered_billing on; the key alone chooses the site: the host is 127.0.0.1).
// Prints one JSON line {"ok": true, "steps": [...]} on success; any failed check exits 1 with the reason.
'use strict';

const assert = require('assert');
const chargebee = require(process.env.CHARGEBEE_MODULE);

const port = Number(process.env.BILLHIVE_PORT);
const key = process.env.BILLHIVE_API_KEY;
// The v1 SDK builds https://{site}{hostSuffix}:{port}/api/v1: with the site '127.0.0.1' and no suffix it
// calls billhive at 127.0.0.1, and the API key picks the site (billhive/http/auth.py).
chargebee.configure({site: '127.0.0.1', hostSuffix: '', protocol: 'http', port: port, api_key: key,
                     timeout: 30000});

const steps = [];
const DAY = 86400;
const GENESIS = Date.UTC(2031, 0, 15) / 1000;  // 2031-01-15T00:00:00Z

// The time machine is not in the v1 SDK (Chargebee has it in v2 only): plain HTTP, as the README shows.
async function machine(method, path, params) {
  const auth = 'Basic ' + Buffer.from(key + ':').toString('base64');
  const init = {method: method, headers: {authorization: auth}};
  if (params) {
    init.body = new URLSearchParams(params).toString();
    init.headers['content-type'] = 'application/x-www-form-urlencoded';
  }
  const r = await fetch(`http://127.0.0.1:${port}/api/v1/time_machines/delorean${path}`, init);
  const body = await r.json();
  assert.strictEqual(r.status, 200, JSON.stringify(body));
  return body.time_machine;
}

async function travelTo(destination) {
  let tm = await machine('POST', '/travel_forward', {destination_time: String(destination)});
  const deadline = Date.now() + 60000;
  while (tm.time_travel_status === 'in_progress') {  // asynchronous as in v2: poll until it is over
    assert.ok(Date.now() < deadline, 'time travel still in progress after 60 s');
    await new Promise((resolve) => setTimeout(resolve, 200));
    tm = await machine('GET', '');
  }
  assert.strictEqual(tm.time_travel_status, 'succeeded', JSON.stringify(tm));
  assert.strictEqual(tm.destination_time, destination);
  return tm;
}

async function refused(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('the call should have been refused');
}

async function main() {
  let tm = await machine('POST', '/start_afresh', {genesis_time: String(GENESIS)});
  assert.strictEqual(tm.genesis_time, GENESIS);
  steps.push('start_afresh');

  const plan = (await chargebee.plan.create({id: 'node-pro', name: 'Pro', price: 2000, period: 1,
                                             period_unit: 'month'}).request()).plan;
  assert.strictEqual(plan.price, 2000);
  assert.strictEqual(plan.status, 'active');
  steps.push('plan');

  const card = {number: '4111111111111111', expiry_month: 12, expiry_year: 2040, cvv: '123'};
  const created = await chargebee.customer.create({id: 'node-ada', first_name: 'Ada', email: 'ada@example.com',
                                                   card: card}).request();
  assert.strictEqual(created.customer.id, 'node-ada');
  assert.strictEqual(created.customer.card_status, 'valid');
  assert.strictEqual(created.card.last4, '1111');
  steps.push('customer with a card');

  const signup = await chargebee.subscription.create_for_customer('node-ada', {plan_id: 'node-pro'}).request();
  const sub = signup.subscription;
  assert.strictEqual(sub.status, 'active');
  assert.strictEqual(sub.current_term_start, GENESIS);
  assert.strictEqual(signup.invoice.status, 'paid');
  assert.strictEqual(signup.invoice.amount_paid, 2000);
  steps.push('subscription');

  // a month on: under metered billing the renewal's invoice stays pending for usage charges
  tm = await travelTo(sub.current_term_end + DAY);
  const renewed = (await chargebee.subscription.retrieve(sub.id).request()).subscription;
  assert.strictEqual(renewed.current_term_start, sub.current_term_end);
  assert.strictEqual(renewed.status, 'active');
  const pendings = await chargebee.invoice.list({subscription_id: {is: sub.id}, status: {is: 'pending'}}).request();
  assert.strictEqual(pendings.list.length, 1);
  const pending = pendings.list[0].invoice;
  assert.ok(pending.id.startsWith('draft_inv_'), pending.id);
  assert.strictEqual(pending.amount_due, 2000);
  steps.push('time travel to a metered renewal');

  const charged = (await chargebee.invoice.add_charge(pending.id, {amount: 350,
                                                                   description: 'API calls'}).request()).invoice;
  assert.strictEqual(charged.status, 'pending');
  assert.strictEqual(charged.sub_total, 2350);
  assert.deepStrictEqual(charged.line_items.map((li) => li.amount).sort((a, b) => a - b), [350, 2000]);
  steps.push('add_charge');

  const collected = (await chargebee.invoice.collect(pending.id).request()).invoice;
  assert.strictEqual(collected.status, 'paid');
  assert.strictEqual(collected.amount_paid, 2350);
  assert.ok(!collected.id.startsWith('draft_inv_'), collected.id);
  const txn = (await chargebee.transaction.retrieve(collected.linked_transactions[0].txn_id).request()).transaction;
  assert.strictEqual(txn.status, 'success');
  assert.strictEqual(txn.amount, 2350);
  steps.push('collect');

  // errors: the SDK rejects with billhive's error JSON plus http_status_code
  let err = await refused(chargebee.customer.retrieve('no-such-customer').request());
  assert.strictEqual(err.http_status_code, 404);
  assert.strictEqual(err.api_error_code, 'resource_not_found');
  assert.strictEqual(err.type, 'invalid_request');
  assert.ok(err.message.length > 0);
  err = await refused(chargebee.plan.create({id: 'node-bad', name: 'Bad', price: -1}).request());
  assert.strictEqual(err.http_status_code, 400);
  assert.strictEqual(err.type, 'invalid_request');
  assert.strictEqual(err.api_error_code, 'param_wrong_value');
  assert.strictEqual(err.param, 'price');
  assert.strictEqual(err.message, 'price : cannot be less than 0');
  assert.strictEqual(err.error_code, 'param_wrong_value');  // the v1 error's older fields, kept
  err = await refused(chargebee.plan.create({id: 'node-bad', price: 100}).request());
  assert.strictEqual(err.http_status_code, 400);
  assert.strictEqual(err.param, 'name');
  assert.strictEqual(err.error_code, 'param_not_present');
  err = await refused(chargebee.subscription.create_for_customer('node-ada', {plan_id: 'no-such-plan'}).request());
  assert.strictEqual(err.http_status_code, 404);
  assert.strictEqual(err.param, 'plan_id');
  steps.push('errors');

  // lists: three more customers, then every customer one page of two at a time through next_offset
  for (const n of [1, 2, 3]) {
    await chargebee.customer.create({id: `node-c${n}`, email: `c${n}@example.com`}).request();
  }
  const seen = [];
  let offset;
  let pages = 0;
  do {
    const params = {limit: 2};
    if (offset) params.offset = offset;
    const page = await chargebee.customer.list(params).request();
    assert.ok(page.list.length <= 2);
    page.list.forEach((entry) => seen.push(entry.customer.id));
    offset = page.next_offset;
    pages += 1;
  } while (offset);
  assert.strictEqual(pages, 2);
  assert.deepStrictEqual(seen.slice().sort(), ['node-ada', 'node-c1', 'node-c2', 'node-c3']);
  assert.strictEqual(new Set(seen).size, 4);
  const invoices = await chargebee.invoice.invoices_for_customer('node-ada', {limit: 1}).request();
  assert.strictEqual(invoices.list.length, 1);
  assert.ok(invoices.next_offset, 'two invoices, one a page: a next_offset');
  const rest = await chargebee.invoice.invoices_for_customer('node-ada', {limit: 1,
                                                                         offset: invoices.next_offset}).request();
  assert.strictEqual(rest.list.length, 1);
  assert.strictEqual(rest.next_offset, undefined);
  assert.deepStrictEqual([invoices.list[0].invoice.id, rest.list[0].invoice.id].sort(),
                         [signup.invoice.id, collected.id].sort());
  steps.push('lists with next_offset');

  console.log(JSON.stringify({ok: true, steps: steps}));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : JSON.stringify(err));
  process.exit(1);
});
