// What a concert.v1 error says: its gRPC code, the google.rpc.ErrorInfo reason
// (as the generated concert.v1.ErrorReason), the ErrorInfo metadata and the
// RetryInfo delay, decoded from the status details (grpc-status-details-bin)
// with the google.rpc stubs generated beside ours.
import { Metadata, status as Code } from '@grpc/grpc-js';
import { ErrorReason, errorReasonFromJSON, errorReasonToJSON } from '../../../../gen/ts/concert/v1/error_reason';
import { ErrorInfo, RetryInfo } from '../../../../gen/ts/google/rpc/error_details';
import { Status } from '../../../../gen/ts/google/rpc/status';

const ERROR_INFO = 'type.googleapis.com/google.rpc.ErrorInfo';
const RETRY_INFO = 'type.googleapis.com/google.rpc.RetryInfo';
// ErrorInfo.domain of concert.v1's errors; a reason is only ours in it.
const DOMAIN = 'concert.v1';
// The wire reason is the enum value's name without this prefix.
const PREFIX = 'ERROR_REASON_';

/**
 * ErrorInfo.reason as the enum value it names (the one place the string is
 * read). A reason this build does not know (a newer server's), or one of
 * another domain, is UNSPECIFIED: the caller then goes by the status code
 * alone, as the enum's comment tells clients.
 */
export function reasonOf(domain: string, reason: string): ErrorReason {
  if (domain !== DOMAIN) return ErrorReason.ERROR_REASON_UNSPECIFIED;
  // The prefix keeps the lookup to names: fromJSON also takes numbers.
  const known = errorReasonFromJSON(PREFIX + reason);
  return known === ErrorReason.UNRECOGNIZED ? ErrorReason.ERROR_REASON_UNSPECIFIED : known;
}

/** An enum value as it is sent (TOKEN_EXPIRED), for messages. */
export function wireName(reason: ErrorReason): string {
  return errorReasonToJSON(reason).replace(PREFIX, '');
}

/** One failed call, as the server described it. */
export class Failure extends Error {
  constructor(
    readonly code: Code,
    readonly reason: ErrorReason,
    /** ErrorInfo.reason as sent, kept for messages when the enum does not know it. */
    readonly wireReason: string,
    readonly metadata: Record<string, string>,
    /** RetryInfo's delay in milliseconds, when the server says waiting helps. */
    readonly retryDelayMs: number | undefined,
    details: string,
  ) {
    super(`${Code[code]} ${wireReason || '(no reason)'}: ${details}`);
  }
}

/**
 * Whether to wait RetryInfo's delay and send the same request again, as
 * docs/api.md's client guide says for each reason. Exhaustive: a value added
 * to the enum fails the type check here until this client decides on it.
 */
export function waitingHelps(failure: Failure): boolean {
  const reason = failure.reason;
  switch (reason) {
    // Busy for now (RESOURCE_EXHAUSTED, ABORTED), with RetryInfo: the
    // channel's backoff cannot read the delay, so this client waits it.
    case ErrorReason.ERROR_REASON_SERVER_BUSY:
    case ErrorReason.ERROR_REASON_PASSWORD_HASHING_BUSY:
    case ErrorReason.ERROR_REASON_TOO_MANY_ATTEMPTS:
    case ErrorReason.ERROR_REASON_PAYMENT_IN_PROGRESS:
      return true;
    // UNAVAILABLE: the service config's retry policy already retried these.
    case ErrorReason.ERROR_REASON_DATABASE_UNAVAILABLE:
    case ErrorReason.ERROR_REASON_DATABASE_BUSY:
    case ErrorReason.ERROR_REASON_DATABASE_TIMEOUT:
    case ErrorReason.ERROR_REASON_DATABASE_CONFLICT:
    case ErrorReason.ERROR_REASON_QUEUE_STARTING:
    case ErrorReason.ERROR_REASON_PAYMENT_GATEWAY_UNAVAILABLE:
      return false;
    // Waiting in line: watch the queue (WatchQueueStatus) instead.
    case ErrorReason.ERROR_REASON_QUEUE_NOT_ADMITTED:
      return false;
    // The same request gets the same answer: fix it, sign in again, or give up.
    case ErrorReason.ERROR_REASON_INVALID_ARGUMENT:
    case ErrorReason.ERROR_REASON_REQUEST_MALFORMED:
    case ErrorReason.ERROR_REASON_REQUEST_TOO_LARGE:
    case ErrorReason.ERROR_REASON_REQUEST_ID_REUSED:
    case ErrorReason.ERROR_REASON_INTERNAL:
    case ErrorReason.ERROR_REASON_UNIMPLEMENTED:
    case ErrorReason.ERROR_REASON_INVALID_CREDENTIALS:
    case ErrorReason.ERROR_REASON_EMAIL_TAKEN:
    case ErrorReason.ERROR_REASON_ADMIN_KEY_MISSING:
    case ErrorReason.ERROR_REASON_ADMIN_KEY_INVALID:
    case ErrorReason.ERROR_REASON_TOKEN_INVALID:
    case ErrorReason.ERROR_REASON_TOKEN_EXPIRED:
    case ErrorReason.ERROR_REASON_TOKEN_COMPLETED:
    case ErrorReason.ERROR_REASON_TOO_MANY_STREAMS:
    case ErrorReason.ERROR_REASON_CONCERT_NOT_FOUND:
    case ErrorReason.ERROR_REASON_DATE_NOT_FOUND:
    case ErrorReason.ERROR_REASON_SEAT_NOT_FOUND:
    case ErrorReason.ERROR_REASON_SEAT_UNAVAILABLE:
    case ErrorReason.ERROR_REASON_HOLD_LIMIT_REACHED:
    case ErrorReason.ERROR_REASON_RESERVATION_NOT_FOUND:
    case ErrorReason.ERROR_REASON_RESERVATION_NOT_HELD:
    case ErrorReason.ERROR_REASON_INSUFFICIENT_BALANCE:
    case ErrorReason.ERROR_REASON_PAYMENT_NOT_FOUND:
    case ErrorReason.ERROR_REASON_MODULE_SIGNATURE_INVALID:
    case ErrorReason.ERROR_REASON_AMOUNT_MISMATCH:
    case ErrorReason.ERROR_REASON_NOT_WALLET_OWNER:
    case ErrorReason.ERROR_REASON_USER_NOT_FOUND:
    case ErrorReason.ERROR_REASON_BALANCE_LIMIT_EXCEEDED:
      return false;
    // A reason this build does not know: by the status code alone, which
    // waits where the guide's busy codes come with a RetryInfo delay.
    case ErrorReason.ERROR_REASON_UNSPECIFIED:
    case ErrorReason.UNRECOGNIZED:
      return (
        (failure.code === Code.RESOURCE_EXHAUSTED || failure.code === Code.ABORTED) &&
        failure.retryDelayMs !== undefined
      );
    default: {
      const unhandled: never = reason;
      throw new Error(`no retry decision for ErrorReason ${String(unhandled)}`);
    }
  }
}

interface GrpcError {
  code: Code;
  details: string;
  metadata: Metadata;
}

function isGrpcError(error: unknown): error is GrpcError {
  return (
    typeof error === 'object' &&
    error !== null &&
    'code' in error &&
    'metadata' in error &&
    (error as { metadata: unknown }).metadata instanceof Metadata
  );
}

/** A grpc-js error as a Failure; anything else is not a server's answer and is rethrown. */
export function asFailure(error: unknown): Failure {
  if (error instanceof Failure) return error;
  if (!isGrpcError(error)) throw error;
  let domain = '';
  let reason = '';
  let metadata: Record<string, string> = {};
  let retryDelayMs: number | undefined;
  const [packed] = error.metadata.get('grpc-status-details-bin');
  if (packed instanceof Buffer) {
    for (const detail of Status.decode(packed).details) {
      if (detail.typeUrl === ERROR_INFO) {
        const info = ErrorInfo.decode(detail.value);
        domain = info.domain;
        reason = info.reason;
        metadata = info.metadata;
      } else if (detail.typeUrl === RETRY_INFO) {
        const delay = RetryInfo.decode(detail.value).retryDelay;
        if (delay) retryDelayMs = Number(delay.seconds) * 1000 + delay.nanos / 1e6;
      }
    }
  }
  return new Failure(error.code, reasonOf(domain, reason), reason, metadata, retryDelayMs, error.details);
}
