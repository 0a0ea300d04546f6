// What a concert.v1 error says: its gRPC code, the google.rpc.ErrorInfo reason,
// the ErrorInfo metadata and the RetryInfo delay, decoded from the status
// details (grpc-status-details-bin) with the google.rpc stubs generated beside
// ours.
import { Metadata, status as Code } from '@grpc/grpc-js';
import { ErrorInfo, RetryInfo } from '../../../../gen/ts/google/rpc/error_details';
import { Status } from '../../../../gen/ts/google/rpc/status';

const ERROR_INFO = 'type.googleapis.com/google.rpc.ErrorInfo';
const RETRY_INFO = 'type.googleapis.com/google.rpc.RetryInfo';

// The reasons this client acts on. Until concert.v1.ErrorReason (the proto enum
// every reason will come from) lands, they are spelled here once; then this
// becomes the generated enum and reasonOf() maps the string onto it.
export const Reason = {
  EMAIL_TAKEN: 'EMAIL_TAKEN',
  INVALID_CREDENTIALS: 'INVALID_CREDENTIALS',
  CREDENTIALS_INVALID: 'CREDENTIALS_INVALID',
  PASSWORD_HASHING_BUSY: 'PASSWORD_HASHING_BUSY',
  QUEUE_NOT_ADMITTED: 'QUEUE_NOT_ADMITTED',
  DATE_NOT_FOUND: 'DATE_NOT_FOUND',
  SEAT_UNAVAILABLE: 'SEAT_UNAVAILABLE',
  INSUFFICIENT_BALANCE: 'INSUFFICIENT_BALANCE',
  PAYMENT_IN_PROGRESS: 'PAYMENT_IN_PROGRESS',
  TOKEN_COMPLETED: 'TOKEN_COMPLETED',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** One failed call, as the server described it. */
export class Failure extends Error {
  constructor(
    readonly code: Code,
    readonly reason: string,
    readonly metadata: Record<string, string>,
    /** RetryInfo's delay in milliseconds, when the server says waiting helps. */
    readonly retryDelayMs: number | undefined,
    details: string,
  ) {
    super(`${Code[code]} ${reason || '(no reason)'}: ${details}`);
  }

  /** The reason, when it is one this client knows (the one place reasons are matched). */
  knownReason(): Reason | undefined {
    return (Object.values(Reason) as string[]).includes(this.reason)
      ? (this.reason as Reason)
      : undefined;
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
  let reason = '';
  let metadata: Record<string, string> = {};
  let retryDelayMs: number | undefined;
  const [packed] = error.metadata.get('grpc-status-details-bin');
  if (packed instanceof Buffer) {
    for (const detail of Status.decode(packed).details) {
      if (detail.typeUrl === ERROR_INFO) {
        const info = ErrorInfo.decode(detail.value);
        reason = info.reason;
        metadata = info.metadata;
      } else if (detail.typeUrl === RETRY_INFO) {
        const delay = RetryInfo.decode(detail.value).retryDelay;
        if (delay) retryDelayMs = Number(delay.seconds) * 1000 + delay.nanos / 1e6;
      }
    }
  }
  return new Failure(error.code, reason, metadata, retryDelayMs, error.details);
}
