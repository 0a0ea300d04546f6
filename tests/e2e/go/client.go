package main

import (
	"context"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// dial opens one plaintext channel configured by the service config shipped
// with the protos: retries on UNAVAILABLE with backoff, per-method timeouts,
// waitForReady. (grpc-go before 1.40 retries only with GRPC_GO_RETRY=on in
// the environment; the test sets it.)
func dial(address, serviceConfigPath string) (*grpc.ClientConn, error) {
	config, err := os.ReadFile(serviceConfigPath)
	if err != nil {
		return nil, err
	}
	return grpc.Dial(address, grpc.WithInsecure(), grpc.WithDefaultServiceConfig(string(config)))
}

// as sends credential as `authorization: Bearer <credential>` on ctx's calls.
func as(ctx context.Context, credential string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+credential)
}

// honouringRetryInfo retries attempt after the delay the server's RetryInfo
// gives, where the client guide says waiting helps (waitingHelps; the
// channel's retries cover UNAVAILABLE but cannot read RetryInfo); other
// failures return at once.
func honouringRetryInfo[T any](attempt func() (T, error)) (T, error) {
	for tries := 1; ; tries++ {
		answer, err := attempt()
		if err == nil || tries >= 5 {
			return answer, err
		}
		failure, other := failureOf(err)
		if other != nil {
			return answer, other
		}
		if !waitingHelps(failure) {
			return answer, failure
		}
		delay := time.Second
		if failure.RetryDelay != nil {
			delay = time.Duration(*failure.RetryDelay * float64(time.Second))
		}
		time.Sleep(delay)
	}
}

// readAll reads a server stream to its end.
func readAll[T any](stream interface{ Recv() (T, error) }) ([]T, error) {
	var messages []T
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			return messages, nil
		}
		if err != nil {
			return messages, err
		}
		messages = append(messages, message)
	}
}
