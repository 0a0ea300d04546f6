// A typed TypeScript client paying through the sandbox payment module
// (paymentmodule.v1, a service and process of its own) and learning the outcome
// from the concert server, with ts-proto stubs for both contracts. Exits 0 when
// all checks pass, 1 on the first mismatch.
//
//   node dist/tests/e2e/node/src/module_walk.js <server host:port> <module host:port> \
//     <module id> <service_config.json>
//
// The caller created a concert titled "Module walk" and runs the module and the
// server as two processes. Two fans walk:
// - the first holds a seat, tops up at the module, pays there, and waits until
//   the module says the server kept the money; the server then shows the
//   module payment COMPLETED and the reservation PAID;
// - the second holds a seat, has a test card declined, tops up, and lets the
//   hold lapse before paying: this client prints `lapse <reservation id>` and
//   waits for a line on stdin (the caller moves the hold's expiry in the
//   server's database, since the server's clock is its own); the module then
//   gives the money back, and the server shows the payment REFUNDED with
//   RESERVATION_NOT_HELD.
// The last line it prints is a JSON summary the caller checks against both
// databases.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Metadata, status as Code } from '@grpc/grpc-js';
import { AccountServiceClient } from '../../../../gen/ts/concert/v1/account';
import { ConcertServiceClient } from '../../../../gen/ts/concert/v1/concert';
import { PaymentServiceClient, PaymentState } from '../../../../gen/ts/concert/v1/payment';
import { QueueServiceClient, QueueTokenState } from '../../../../gen/ts/concert/v1/queue';
import {
  type Reservation,
  ReservationServiceClient,
  ReservationState,
} from '../../../../gen/ts/concert/v1/reservation';
import {
  type ModulePayment,
  ModulePaymentState,
  type PayReservationRequest,
  PaymentModuleServiceClient,
  ServerAnswer,
} from '../../../../gen/ts/paymentmodule/v1/payment_module';
import { Connection, honouringRetryInfo, type UnaryMethod, unary } from './client';
import { ErrorReason } from '../../../../gen/ts/concert/v1/error_reason';
import { asFailure } from './errors';

const CONCERT_TITLE = 'Module walk';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// The module ships no service config: each of its calls gets this deadline.
const MODULE_DEADLINE_MS = 10_000;
// How long the module may take to hear the server's answer (it retries its
// callback with backoff until the server answers).
const ANSWER_DEADLINE_MS = 30_000;
const TEST_CARDS = { declined: '4000000000000002' } as const;
// A module payment's decline and refund reasons this walk expects, as
// paymentmodule.v1's ModulePayment documents them.
const ModuleReason = {
  CARD_DECLINED: 'CARD_DECLINED',
  RESERVATION_NOT_HELD: 'RESERVATION_NOT_HELD',
} as const;

/** One unary call to the module, under MODULE_DEADLINE_MS; failures are Failures. */
function moduleCall<Req, Res>(method: UnaryMethod<Req, Res>, request: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + MODULE_DEADLINE_MS);
    method(request, new Metadata(), { deadline }, (error, response) =>
      error ? reject(asFailure(error)) : resolve(response),
    );
  });
}

/** The next line the caller writes on stdin. */
function nextInputLine(): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdin });
    const closed = () => reject(new Error('stdin closed before the caller answered'));
    lines.once('close', closed);
    lines.once('line', (line) => {
      lines.off('close', closed);
      lines.close();
      resolve(line.trim());
    });
  });
}

function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

async function walk(serverAddress: string, moduleAddress: string, moduleId: string, serviceConfig: string) {
  const server = new Connection(serverAddress, serviceConfig);
  // The module's channel: the concert service config names no module method.
  const moduleConnection = new Connection(moduleAddress, serviceConfig);
  try {
    return await walkBoth(server, moduleConnection, moduleId);
  } finally {
    // Open channels would keep Node running after a failed check.
    server.close();
    moduleConnection.close();
  }
}

async function walkBoth(server: Connection, moduleConnection: Connection, moduleId: string) {
  const account = server.client(AccountServiceClient);
  const queue = server.client(QueueServiceClient);
  const concerts = server.client(ConcertServiceClient);
  const reservations = server.client(ReservationServiceClient);
  const payments = server.client(PaymentServiceClient);
  const sandbox = moduleConnection.client(PaymentModuleServiceClient);
  const step = (name: string) => console.log(`ok  ${name}`);

  /** A new fan, signed in, with an admitted queue token. */
  async function signedInFan() {
    const email = `ts-module-${randomUUID()}@example.com`;
    const password = 'correct horse battery';
    const signedUp = await honouringRetryInfo(
      () => unary(account.signUp.bind(account), { email, password, requestId: randomUUID() }),
    );
    const session = await honouringRetryInfo(
      () => unary(account.signIn.bind(account), { email, password, previousSessionToken: '' }),
    );
    const issued = await unary(queue.issueToken.bind(queue), { sessionToken: session.sessionToken });
    assert.equal(issued.status?.state, QueueTokenState.QUEUE_TOKEN_STATE_ADMITTED, 'admitted at once');
    return { userId: signedUp.userId, sessionToken: session.sessionToken, token: issued.token };
  }
  type Fan = Awaited<ReturnType<typeof signedInFan>>;

  async function hold(fan: Fan, dateId: string, seatNumber: number): Promise<Reservation> {
    const held = (
      await unary(
        reservations.reserveSeat.bind(reservations),
        { dateId, seatNumber, requestId: randomUUID() },
        fan.token,
      )
    ).reservation;
    assert.ok(held);
    assert.equal(held.state, ReservationState.RESERVATION_STATE_HELD);
    return held;
  }

  const balanceOf = async (accountId: string) =>
    (await moduleCall(sandbox.getBalance.bind(sandbox), { accountId })).balance;

  type Source = { accountId: string } | { cardNumber: string };
  function payRequest(fan: Fan, held: Reservation, source: Source): PayReservationRequest {
    return {
      requestId: randomUUID(),
      reservationId: held.reservationId,
      amount: held.price,
      sessionToken: fan.sessionToken,
      ...source,
    };
  }

  /** The module's payment once the server has answered its callback. */
  async function answered(paymentId: string): Promise<ModulePayment> {
    const deadline = Date.now() + ANSWER_DEADLINE_MS;
    for (;;) {
      const { payment } = await moduleCall(sandbox.getModulePayment.bind(sandbox), { paymentId });
      assert.ok(payment);
      if (payment.serverAnswer !== ServerAnswer.SERVER_ANSWER_PENDING) return payment;
      assert.ok(Date.now() < deadline, `the server did not answer module payment ${paymentId} in time`);
      await new Promise((done) => setTimeout(done, 100));
    }
  }

  /** What the server says of a module payment, read with the fan's token. */
  async function serverView(fan: Fan, modulePaymentId: string) {
    const { payment } = await unary(
      payments.getModulePayment.bind(payments),
      { paymentModule: moduleId, modulePaymentId },
      fan.token,
    );
    assert.ok(payment);
    return payment;
  }

  // The concert the caller made, and two free seats of its first date.
  const browser = await signedInFan();
  const listed = await unary(concerts.listConcerts.bind(concerts), { pageSize: 1000, pageToken: '' }, browser.token);
  const concert = listed.concerts.find((c) => c.title === CONCERT_TITLE);
  assert.ok(concert, `"${CONCERT_TITLE}" is listed`);
  const { dates } = await unary(
    concerts.listAvailableDates.bind(concerts),
    { concertId: concert.concertId, pageSize: 0, pageToken: '' },
    browser.token,
  );
  const date = dates[0];
  assert.ok(date, 'the concert has a bookable date');
  const { seats } = await unary(
    concerts.listAvailableSeats.bind(concerts),
    { dateId: date.dateId, pageSize: 0, pageToken: '' },
    browser.token,
  );
  const [firstSeat, secondSeat] = seats;
  assert.ok(firstSeat && secondSeat, 'two free seats');
  step('browse');

  // The first fan pays from a balance at the module, and the seat is sold.
  const buyer = await signedInFan();
  const bought = await hold(buyer, date.dateId, firstSeat.seatNumber);
  const buyerAccount = `ts-${randomUUID()}`;
  assert.equal(await balanceOf(buyerAccount), 0n);
  const topped = await moduleCall(sandbox.topUp.bind(sandbox), {
    accountId: buyerAccount,
    amount: bought.price + 1500n,
    requestId: randomUUID(),
  });
  assert.equal(topped.balance, bought.price + 1500n);
  step('top-up');
  const pay = payRequest(buyer, bought, { accountId: buyerAccount });
  const taken = (await moduleCall(sandbox.payReservation.bind(sandbox), pay)).payment;
  assert.ok(taken);
  assert.match(taken.paymentId, UUID);
  assert.equal(taken.state, ModulePaymentState.MODULE_PAYMENT_STATE_SUCCEEDED);
  assert.deepEqual(
    { reservationId: taken.reservationId, amount: taken.amount, accountId: taken.accountId },
    { reservationId: bought.reservationId, amount: bought.price, accountId: buyerAccount },
  );
  // PayReservation's request_id replays: the same payment, nothing more taken.
  const replayed = (await moduleCall(sandbox.payReservation.bind(sandbox), pay)).payment;
  assert.equal(replayed?.paymentId, taken.paymentId);
  assert.equal(await balanceOf(buyerAccount), 1500n);
  const kept = await answered(taken.paymentId);
  assert.equal(kept.serverAnswer, ServerAnswer.SERVER_ANSWER_PAID);
  assert.equal(kept.state, ModulePaymentState.MODULE_PAYMENT_STATE_SUCCEEDED);
  assert.match(kept.serverPaymentId, UUID);
  const buyerBalance = await balanceOf(buyerAccount);
  assert.equal(buyerBalance, 1500n, 'the module kept the price, once');
  step('module pay');

  const recorded = await serverView(buyer, taken.paymentId);
  assert.equal(recorded.state, PaymentState.PAYMENT_STATE_COMPLETED);
  assert.deepEqual(recorded, {
    ...recorded,
    paymentId: kept.serverPaymentId,
    paymentModule: moduleId,
    modulePaymentId: taken.paymentId,
    reservationId: bought.reservationId,
    userId: buyer.userId,
    amount: bought.price,
    refundReason: '',
  });
  const sold = (
    await unary(reservations.getReservation.bind(reservations), { reservationId: bought.reservationId }, buyer.token)
  ).reservation;
  assert.equal(sold?.state, ReservationState.RESERVATION_STATE_PAID);
  // The callback completed the buyer's queue token, as a wallet payment does.
  try {
    await unary(
      reservations.reserveSeat.bind(reservations),
      { dateId: date.dateId, seatNumber: secondSeat.seatNumber, requestId: randomUUID() },
      buyer.token,
    );
    assert.fail('ReserveSeat with the token the module payment used up succeeded');
  } catch (error) {
    const failure = asFailure(error);
    assert.equal(failure.code, Code.FAILED_PRECONDITION, failure.message);
    assert.equal(failure.reason, ErrorReason.ERROR_REASON_TOKEN_COMPLETED, failure.message);
  }
  step('server paid');

  // The second fan: a declined card takes nothing; then the hold lapses before
  // a balance payment, and the money comes back.
  const lapsing = await signedInFan();
  const lapsed = await hold(lapsing, date.dateId, secondSeat.seatNumber);
  const declined = (
    await moduleCall(
      sandbox.payReservation.bind(sandbox),
      payRequest(lapsing, lapsed, { cardNumber: TEST_CARDS.declined }),
    )
  ).payment;
  assert.ok(declined);
  assert.deepEqual(declined, {
    ...declined,
    state: ModulePaymentState.MODULE_PAYMENT_STATE_DECLINED,
    declineReason: ModuleReason.CARD_DECLINED,
    serverAnswer: ServerAnswer.SERVER_ANSWER_NOT_REPORTED,
    cardLast4: TEST_CARDS.declined.slice(-4),
  });
  step('decline');

  const lapsingAccount = `ts-${randomUUID()}`;
  await moduleCall(sandbox.topUp.bind(sandbox), {
    accountId: lapsingAccount,
    amount: lapsed.price,
    requestId: randomUUID(),
  });
  console.log(`lapse ${lapsed.reservationId}`);
  assert.equal(await nextInputLine(), 'lapsed', 'the caller let the hold lapse');
  const late = (
    await moduleCall(sandbox.payReservation.bind(sandbox), payRequest(lapsing, lapsed, { accountId: lapsingAccount }))
  ).payment;
  assert.ok(late);
  // The module takes the money: only the server knows the hold lapsed.
  assert.equal(late.state, ModulePaymentState.MODULE_PAYMENT_STATE_SUCCEEDED);
  const justAfter = await balanceOf(lapsingAccount);
  if (justAfter !== 0n) {
    // Its callback was already answered REFUND, and the money came back in the
    // transaction that ended the callback: the payment says so by now.
    assert.equal(justAfter, lapsed.price);
    const { payment: now } = await moduleCall(sandbox.getModulePayment.bind(sandbox), { paymentId: late.paymentId });
    assert.equal(now?.state, ModulePaymentState.MODULE_PAYMENT_STATE_REFUNDED);
  }
  const refunded = await answered(late.paymentId);
  assert.deepEqual(refunded, {
    ...refunded,
    state: ModulePaymentState.MODULE_PAYMENT_STATE_REFUNDED,
    serverAnswer: ServerAnswer.SERVER_ANSWER_REFUND,
    refundReason: ModuleReason.RESERVATION_NOT_HELD,
    serverPaymentId: '',
  });
  assert.ok(refunded.refundTime, 'the refund is dated');
  const restored = await balanceOf(lapsingAccount);
  assert.equal(restored, lapsed.price, 'the money is back');

  const seen = await serverView(lapsing, late.paymentId);
  assert.deepEqual(seen, {
    ...seen,
    state: PaymentState.PAYMENT_STATE_REFUNDED,
    refundReason: ModuleReason.RESERVATION_NOT_HELD,
    paymentModule: moduleId,
    modulePaymentId: late.paymentId,
    reservationId: lapsed.reservationId,
    userId: lapsing.userId,
    amount: lapsed.price,
  });
  const after = (
    await unary(reservations.getReservation.bind(reservations), { reservationId: lapsed.reservationId }, lapsing.token)
  ).reservation;
  assert.ok(after);
  assert.ok(
    [ReservationState.RESERVATION_STATE_HELD, ReservationState.RESERVATION_STATE_EXPIRED].includes(after.state),
    `a lapsed hold stays HELD or turns EXPIRED, not ${after.state}`,
  );
  step('refund');

  return {
    date_id: date.dateId,
    paid: {
      user_id: buyer.userId,
      reservation_id: bought.reservationId,
      seat_number: bought.seatNumber,
      module_payment_id: taken.paymentId,
      server_payment_id: kept.serverPaymentId,
      account_id: buyerAccount,
      amount: bought.price,
      balance: buyerBalance,
    },
    refunded: {
      user_id: lapsing.userId,
      reservation_id: lapsed.reservationId,
      seat_number: lapsed.seatNumber,
      module_payment_id: late.paymentId,
      declined_payment_id: declined.paymentId,
      account_id: lapsingAccount,
      amount: lapsed.price,
      balance: restored,
    },
  };
}

async function main(): Promise<number> {
  const [serverAddress, moduleAddress, moduleId, serviceConfig] = process.argv.slice(2);
  if (!serverAddress || !moduleAddress || !moduleId || !serviceConfig) {
    console.error('usage: node module_walk.js <server host:port> <module host:port> <module id> <service_config.json>');
    return 2;
  }
  try {
    console.log(JSON.stringify(await walk(serverAddress, moduleAddress, moduleId, serviceConfig), jsonSafe));
  } catch (error) {
    console.error(`FAILED: ${error instanceof Error ? error.stack : String(error)}`);
    return 1;
  }
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
