package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEtcdUnreachableClassifier: the errors etcd and its client return
// while a leader is being elected, or while a member has no quorum, are
// "unreachable" (the claim is queued, 202), including etcd 3.4's
// server-side deadline, which arrives as gRPC code Unknown; errors that
// refuse the request are not.
func TestEtcdUnreachableClassifier(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		// etcd 3.4: the server's own context deadline, not translated.
		{"server deadline as code Unknown", status.Error(codes.Unknown, context.DeadlineExceeded.Error()), true},
		{"server deadline as code Unknown, wrapped", fmt.Errorf("txn: %w", status.Error(codes.Unknown, "context deadline exceeded")), true},
		// What the client returns for the server's known errors.
		{"leader changed", rpctypes.ErrLeaderChanged, true},
		{"leader changed, as sent", rpctypes.Error(rpctypes.ErrGRPCLeaderChanged), true},
		{"request timed out", rpctypes.ErrTimeout, true},
		{"timed out due to leader failure", rpctypes.ErrTimeoutDueToLeaderFail, true},
		{"timed out due to connection lost", rpctypes.ErrTimeoutDueToConnectionLost, true},
		{"no leader", rpctypes.ErrNoLeader, true},
		{"not leader", rpctypes.Error(rpctypes.ErrGRPCNotLeader), true},
		{"stopped", rpctypes.ErrStopped, true},
		{"timed out waiting for the applied index", rpctypes.ErrTimeoutWaitAppliedIndex, true},
		{"raw gRPC no leader", rpctypes.ErrGRPCNoLeader, true},
		{"server deadline as code DeadlineExceeded", rpctypes.ErrGRPCDeadlineExceeded, true},
		{"client deadline", context.DeadlineExceeded, true},
		{"connection refused", status.Error(codes.Unavailable, "connection error: dial tcp 127.0.0.1:1: connect: connection refused"), true},

		{"other Unknown", status.Error(codes.Unknown, "something else"), false},
		{"compacted", rpctypes.ErrCompacted, false},
		{"too many operations", rpctypes.ErrTooManyOps, false},
		{"permission denied", rpctypes.ErrPermissionDenied, false},
		{"canceled", context.Canceled, false},
		{"plain error", errors.New("registry: decode"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := etcdUnreachable(tc.err); got != tc.want {
				t.Fatalf("etcdUnreachable(%v) = %v, want %v", tc.err, got, tc.want)
			}
			// The store wraps it with ErrUnavailable only then, so the
			// claim path can queue it.
			wrapped := etcdFailed(context.Background(), "commit", tc.err)
			if errors.Is(wrapped, ErrUnavailable) != tc.want {
				t.Fatalf("etcdFailed(%v) = %v, ErrUnavailable %v", tc.err, wrapped, tc.want)
			}
		})
	}
}
