package main

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reason is a google.rpc.ErrorInfo reason this client acts on. Until
// concert.v1.ErrorReason (the proto enum every reason will come from) lands,
// the reasons are spelled here once; then Reason becomes the generated enum
// and failureOf maps the string onto it.
type Reason string

const (
	EmailTaken          Reason = "EMAIL_TAKEN"
	InvalidCredentials  Reason = "INVALID_CREDENTIALS"
	CredentialsInvalid  Reason = "CREDENTIALS_INVALID"
	PasswordHashingBusy Reason = "PASSWORD_HASHING_BUSY"
	DateNotFound        Reason = "DATE_NOT_FOUND"
	SeatUnavailable     Reason = "SEAT_UNAVAILABLE"
	InsufficientBalance Reason = "INSUFFICIENT_BALANCE"
	PaymentInProgress   Reason = "PAYMENT_IN_PROGRESS"
	TokenCompleted      Reason = "TOKEN_COMPLETED"
)

// Failure is one failed call as the server described it: its code, the
// ErrorInfo reason and metadata, and RetryInfo's delay when waiting helps.
type Failure struct {
	Code       codes.Code
	Reason     Reason
	Metadata   map[string]string
	RetryDelay *float64 // seconds
	Message    string
}

func (f *Failure) Error() string {
	return fmt.Sprintf("%s %s: %s", f.Code, f.Reason, f.Message)
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
			failure.Reason = Reason(info.GetReason())
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
