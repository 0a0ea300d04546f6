package main

import (
	"errors"
	"fmt"
	"strings"

	concertv1 "github.com/concert-tickets/reservation/gen/go/concert/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// errorDomain is ErrorInfo.domain of concert.v1's errors; a reason is only ours in it.
	errorDomain = "concert.v1"
	// reasonPrefix is dropped from the enum value's name on the wire.
	reasonPrefix = "ERROR_REASON_"
)

// reasonOf maps ErrorInfo.reason onto the generated enum (the one place the
// string is read). A reason this build does not know (a newer server's), or
// one of another domain, is UNSPECIFIED: the caller then goes by the status
// code alone, as the enum's comment tells clients.
func reasonOf(domain, reason string) concertv1.ErrorReason {
	if domain != errorDomain {
		return concertv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	known, ok := concertv1.ErrorReason_value[reasonPrefix+reason]
	if !ok {
		return concertv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return concertv1.ErrorReason(known)
}

// wireName is an enum value as it is sent (TOKEN_EXPIRED), for messages.
func wireName(reason concertv1.ErrorReason) string {
	return strings.TrimPrefix(reason.String(), reasonPrefix)
}

// Failure is one failed call as the server described it: its code, the
// ErrorInfo reason and metadata, and RetryInfo's delay when waiting helps.
type Failure struct {
	Code   codes.Code
	Reason concertv1.ErrorReason
	// WireReason is ErrorInfo.reason as sent, kept for messages when the enum does not know it.
	WireReason string
	Metadata   map[string]string
	RetryDelay *float64 // seconds
	Message    string
}

func (f *Failure) Error() string {
	reason := f.WireReason
	if reason == "" {
		reason = "(no reason)"
	}
	return fmt.Sprintf("%s %s: %s", f.Code, reason, f.Message)
}

// waitingHelps says whether to wait RetryInfo's delay and send the same
// request again, as docs/api.md's client guide says for each reason. (Go
// checks no switch for exhaustiveness; the TypeScript client's twin is
// checked by tsc.)
func waitingHelps(f *Failure) bool {
	switch f.Reason {
	// Busy for now (RESOURCE_EXHAUSTED, ABORTED), with RetryInfo: the
	// channel's backoff cannot read the delay, so this client waits it.
	case concertv1.ErrorReason_ERROR_REASON_SERVER_BUSY,
		concertv1.ErrorReason_ERROR_REASON_PASSWORD_HASHING_BUSY,
		concertv1.ErrorReason_ERROR_REASON_TOO_MANY_ATTEMPTS,
		concertv1.ErrorReason_ERROR_REASON_PAYMENT_IN_PROGRESS:
		return true
	// A reason this build does not know: by the status code alone, which
	// waits where the guide's busy codes come with a RetryInfo delay.
	case concertv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
		return (f.Code == codes.ResourceExhausted || f.Code == codes.Aborted) && f.RetryDelay != nil
	// UNAVAILABLE ones the service config's retry policy already retried;
	// QUEUE_NOT_ADMITTED asks to watch the queue instead; every other reason
	// gets the same answer for the same request.
	default:
		return false
	}
}

// failureOf reads a call's error; an error that is no gRPC status is returned as it is.
func failureOf(err error) (*Failure, error) {
	var failure *Failure
	if errors.As(err, &failure) {
		return failure, nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, err
	}
	failure = &Failure{Code: st.Code(), Message: st.Message()}
	for _, detail := range st.Details() {
		switch info := detail.(type) {
		case *errdetails.ErrorInfo:
			failure.Reason = reasonOf(info.GetDomain(), info.GetReason())
			failure.WireReason = info.GetReason()
			failure.Metadata = info.GetMetadata()
		case *errdetails.RetryInfo:
			if delay := info.GetRetryDelay(); delay != nil {
				seconds := float64(delay.GetSeconds()) + float64(delay.GetNanos())/1e9
				failure.RetryDelay = &seconds
			}
		}
	}
	return failure, nil
}
