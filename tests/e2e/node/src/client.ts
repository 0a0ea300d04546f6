// Channels and calls: every client shares one channel configured by the
// service config shipped with the protos (retries on UNAVAILABLE with backoff,
// per-method timeouts, waitForReady), and calls come back as promises whose
// failures are Failures (errors.ts).
import { readFileSync } from 'node:fs';
import {
  type CallOptions,
  type Client,
  type ClientOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { asFailure, waitingHelps } from './errors';

/** Channel options that apply a service config (protos/concert/v1/service_config.json). */
export function channelOptions(serviceConfigPath: string): Partial<ClientOptions> {
  return {
    'grpc.service_config': readFileSync(serviceConfigPath, 'utf8'),
    // Pings every 10 s at most often, as WatchQueueStatus's comment allows.
    'grpc.keepalive_time_ms': 10_000,
  };
}

type ClientClass<C extends Client> = new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>,
  options?: Partial<ClientOptions>,
) => C;

/** Plaintext HTTP/2 clients of one server that share a channel (the first one's). */
export class Connection {
  private readonly clients: Client[] = [];
  constructor(
    private readonly address: string,
    private readonly serviceConfigPath: string,
  ) {}

  client<C extends Client>(Service: ClientClass<C>): C {
    const first = this.clients[0];
    const options: Partial<ClientOptions> = first
      ? { ...channelOptions(this.serviceConfigPath), channelOverride: first.getChannel() }
      : channelOptions(this.serviceConfigPath);
    const made = new Service(this.address, credentials.createInsecure(), options);
    this.clients.push(made);
    return made;
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}

export function bearer(credential?: string): Metadata {
  const metadata = new Metadata();
  if (credential) metadata.set('authorization', `Bearer ${credential}`);
  return metadata;
}

export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** One unary call; the deadline comes from the service config's timeout. */
export function unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, credential?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, bearer(credential), {}, (error, response) =>
      error ? reject(asFailure(error)) : resolve(response),
    );
  });
}

type StreamMethod<Req, Res> = (
  request: Req,
  metadata?: Metadata,
  options?: Partial<CallOptions>,
) => ClientReadableStream<Res>;

/** A server stream read to its end. */
export function collect<Req, Res>(method: StreamMethod<Req, Res>, request: Req, credential: string, deadlineMs: number): Promise<Res[]> {
  return new Promise((resolve, reject) => {
    const messages: Res[] = [];
    const call = method(request, bearer(credential), { deadline: new Date(Date.now() + deadlineMs) });
    call.on('data', (message: Res) => messages.push(message));
    call.on('error', (error: unknown) => reject(asFailure(error)));
    call.on('end', () => resolve(messages));
  });
}

/**
 * Retries a call after the delay the server's RetryInfo gives, where the
 * client guide says waiting helps (waitingHelps; the channel's own retries
 * cover UNAVAILABLE, but cannot read RetryInfo). Other failures are thrown at
 * once.
 */
export async function honouringRetryInfo<T>(attempt: () => Promise<T>, maxAttempts = 5): Promise<T> {
  for (let tries = 1; ; tries += 1) {
    try {
      return await attempt();
    } catch (error) {
      const failure = asFailure(error);
      if (tries >= maxAttempts || !waitingHelps(failure)) throw failure;
      await new Promise((done) => setTimeout(done, failure.retryDelayMs ?? 1000));
    }
  }
}
