// A Node.js client of concert.v1, built from protos/ at run time with
// @grpc/proto-loader, walking one fan through the whole flow and checking every
// answer. Exits 0 when all checks pass, 1 on the first mismatch.
//
//   node walk.js <host:port> <admin key>
//
// The caller created a concert titled "Node walk" through AdminService; this
// client signs up, signs in, takes a queue token, watches the stream until
// admitted, finds that concert, its first date and that date's first free seat,
// reserves it, charges its wallet and pays. The last line it prints is a JSON
// summary (user, date, seat, payment) the caller checks against the database.
'use strict';

const path = require('node:path');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', '..', 'protos');
const FILES = ['account', 'queue', 'concert', 'reservation', 'payment', 'wallet', 'admin'].map(
  (name) => `concert/v1/${name}.proto`,
);
const DEADLINE_MS = 15000;
const CONCERT_TITLE = 'Node walk';

function loadServices() {
  const definition = protoLoader.loadSync(FILES, {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the protos (snake_case)
    longs: String, // int64 as decimal strings: no precision lost
    enums: String, // enum values by name
    defaults: true, // zero values present, so every field can be checked
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).concert.v1;
}

function bearer(credential) {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  return metadata;
}

function unary(client, method, request, credential) {
  const metadata = credential ? bearer(credential) : new grpc.Metadata();
  const deadline = new Date(Date.now() + DEADLINE_MS);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function serverStream(client, method, request, credential) {
  const deadline = new Date(Date.now() + DEADLINE_MS);
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client[method](request, bearer(credential), { deadline });
    call.on('data', (message) => messages.push(message));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

async function expectError(promise, code, what) {
  try {
    const answer = await promise;
    assert.fail(`${what}: expected ${code}, got an answer ${JSON.stringify(answer)}`);
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    assert.equal(error.code, grpc.status[code], `${what}: ${error.code} ${error.details}`);
  }
}

function isUuid(text) {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(text);
}

function seconds(timestamp) {
  return Number(timestamp.seconds);
}

async function walk(address, adminKey) {
  const v1 = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const client = (Service) => new Service(address, credentials);
  const account = client(v1.AccountService);
  const queue = client(v1.QueueService);
  const concerts = client(v1.ConcertService);
  const reservations = client(v1.ReservationService);
  const payments = client(v1.PaymentService);
  const wallet = client(v1.WalletService);
  const step = (name) => console.log(`ok  ${name}`);
  const now = Date.now() / 1000;

  // Sign up and sign in.
  const email = `node-${crypto.randomUUID()}@example.com`;
  const password = 'correct horse battery';
  const signedUp = await unary(account, 'SignUp', { email, password, request_id: crypto.randomUUID() });
  assert.ok(isUuid(signedUp.user_id), signedUp.user_id);
  assert.equal(signedUp.email, email);
  const userId = signedUp.user_id;
  await expectError(unary(account, 'SignUp', { email, password }), 'ALREADY_EXISTS', 'SignUp twice');
  step('sign-up');
  const session = await unary(account, 'SignIn', { email, password });
  assert.equal(session.user_id, userId);
  assert.ok(session.session_token.length > 0);
  assert.ok(seconds(session.expire_time) > now, 'session expires in the future');
  await expectError(
    unary(account, 'SignIn', { email, password: 'wrong password!' }),
    'UNAUTHENTICATED',
    'SignIn with a wrong password',
  );
  step('sign-in');

  // A place in line, by session credential.
  const issued = await unary(queue, 'IssueToken', { session_token: session.session_token });
  assert.ok(issued.token.length > 0);
  assert.ok(Number(issued.status.queue_number) >= 1);
  step(`token (queue number ${issued.status.queue_number}, ${issued.status.state})`);

  // Watch: one message at once, the stream ends once admitted.
  const updates = await serverStream(queue, 'WatchQueueStatus', {}, issued.token);
  assert.ok(updates.length >= 1, 'the watch sent at least one status');
  const last = updates[updates.length - 1];
  assert.equal(last.status.state, 'QUEUE_TOKEN_STATE_ADMITTED');
  assert.equal(last.status.people_ahead, '0');
  assert.equal(last.status.queue_number, issued.status.queue_number);
  const token = last.token;
  step(`watch (${updates.length} update(s), admitted)`);
  const status = await unary(queue, 'GetQueueStatus', {}, token);
  assert.equal(status.status.state, 'QUEUE_TOKEN_STATE_ADMITTED');

  // Browse: the concert, its first bookable date, that date's first free seat.
  const listed = await unary(concerts, 'ListConcerts', { page_size: 1000 }, token);
  const concert = listed.concerts.find((c) => c.title === CONCERT_TITLE);
  assert.ok(concert, `"${CONCERT_TITLE}" is listed`);
  const concertId = concert.concert_id;
  assert.ok(isUuid(concertId));
  const dates = (await unary(concerts, 'ListAvailableDates', { concert_id: concertId }, token)).dates;
  assert.ok(dates.length >= 1, 'the concert has a bookable date');
  for (const date of dates) {
    assert.equal(date.concert_id, concertId);
    assert.ok(date.available_seat_count >= 1 && date.available_seat_count <= date.total_seat_count);
    assert.ok(seconds(date.start_time) > now, 'the date is in the future');
  }
  const dateId = dates[0].date_id;
  const freeBefore = dates[0].available_seat_count;
  step(`list concerts and dates (${dates.length} date(s))`);
  const seats = (await unary(concerts, 'ListAvailableSeats', { date_id: dateId }, token)).seats;
  assert.equal(seats.length, freeBefore, 'the seat list agrees with the free count');
  const seat = seats[0];
  assert.equal(seat.date_id, dateId);
  const seatNumber = seat.seat_number;
  const price = Number(seat.price);
  assert.ok(price > 0);
  await expectError(
    unary(concerts, 'ListAvailableSeats', { date_id: crypto.randomUUID() }, token),
    'NOT_FOUND',
    'ListAvailableSeats of no date',
  );
  step('list seats');

  // Reserve the seat: it leaves the free list.
  const held = (await unary(reservations, 'ReserveSeat', { date_id: dateId, seat_number: seatNumber, request_id: crypto.randomUUID() }, token)).reservation;
  assert.equal(held.state, 'RESERVATION_STATE_HELD');
  assert.deepEqual([held.user_id, held.concert_id, held.date_id, held.seat_number, held.price], [userId, concertId, dateId, seatNumber, String(price)]);
  assert.ok(seconds(held.expire_time) > seconds(held.create_time));
  const after = await unary(concerts, 'ListAvailableSeats', { date_id: dateId }, token);
  assert.ok(!after.seats.some((s) => s.seat_number === seatNumber), 'the held seat is not listed');
  await expectError(
    unary(reservations, 'ReserveSeat', { date_id: dateId, seat_number: seatNumber }, token),
    'ALREADY_EXISTS',
    'ReserveSeat of a held seat',
  );
  step('reserve');

  // Pay without money: refused, nothing changes.
  const pay = { reservation_id: held.reservation_id, request_id: crypto.randomUUID() };
  await expectError(unary(payments, 'Pay', pay, token), 'FAILED_PRECONDITION', 'Pay with an empty wallet');

  // Charge the wallet with the fan's own session.
  const charged = await unary(wallet, 'Charge', { user_id: userId, amount: price + 1000, request_id: crypto.randomUUID() }, session.session_token);
  assert.equal(charged.user_id, userId);
  assert.equal(charged.balance, String(price + 1000));
  await expectError(
    unary(wallet, 'Charge', { user_id: userId, amount: 1 }, 'not-a-credential'),
    'UNAUTHENTICATED',
    'Charge without a session',
  );
  step('charge');

  // Pay: the payment completes, the money moves, the reservation is paid.
  const payment = (await unary(payments, 'Pay', pay, token)).payment;
  assert.ok(isUuid(payment.payment_id));
  assert.equal(payment.state, 'PAYMENT_STATE_COMPLETED');
  assert.deepEqual([payment.reservation_id, payment.user_id, payment.amount], [held.reservation_id, userId, String(price)]);
  const balance = await unary(wallet, 'GetBalance', { user_id: userId }, adminKey);
  assert.equal(balance.balance, '1000');
  // The payment used the token up; a new token reads the results.
  const fresh = (await unary(queue, 'IssueToken', { session_token: session.session_token })).token;
  const shown = (await unary(payments, 'GetPayment', { payment_id: payment.payment_id }, fresh)).payment;
  assert.deepEqual(shown, payment);
  const paid = (await unary(reservations, 'GetReservation', { reservation_id: held.reservation_id }, fresh)).reservation;
  assert.equal(paid.state, 'RESERVATION_STATE_PAID');
  const dateAfter = (await unary(concerts, 'ListAvailableDates', { concert_id: concertId }, fresh)).dates.find((d) => d.date_id === dateId);
  assert.equal(dateAfter ? dateAfter.available_seat_count : 0, freeBefore - 1, 'one seat fewer is free');
  step('pay');

  for (const c of [account, queue, concerts, reservations, payments, wallet]) c.close();
  return { user_id: userId, date_id: dateId, seat_number: seatNumber, payment_id: payment.payment_id, amount: price };
}

async function main() {
  const [address, adminKey] = process.argv.slice(2);
  if (!address || !adminKey) {
    console.error('usage: node walk.js <host:port> <admin key>');
    return 2;
  }
  try {
    const summary = await walk(address, adminKey);
    console.log(JSON.stringify(summary));
  } catch (error) {
    console.error(`FAILED: ${error.stack || error}`);
    return 1;
  }
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
