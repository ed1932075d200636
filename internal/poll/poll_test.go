package poll

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestUntilHolds(t *testing.T) {
	calls := 0
	err := Until(context.Background(), time.Second, time.Millisecond, func() (bool, error) {
		calls++
		return calls == 3, nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestUntilCondError(t *testing.T) {
	boom := errors.New("process exited")
	calls := 0
	err := Until(context.Background(), time.Second, time.Millisecond, func() (bool, error) {
		calls++
		return false, boom
	})
	if err != boom || calls != 1 {
		t.Fatalf("Until = %v after %d calls, want the cond's error after 1", err, calls)
	}
}

func TestUntilTimeout(t *testing.T) {
	start := time.Now()
	calls := 0
	err := Until(context.Background(), 30*time.Millisecond, 5*time.Millisecond, func() (bool, error) {
		calls++
		return false, nil
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Until = %v, want ErrTimeout", err)
	}
	if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
		t.Errorf("gave up after %v, before the 30ms timeout", elapsed)
	}
	if calls < 2 {
		t.Errorf("cond called %d times, want it polled", calls)
	}
}

func TestUntilLastCallAfterTimeout(t *testing.T) {
	start := time.Now()
	err := Until(context.Background(), 10*time.Millisecond, 50*time.Millisecond, func() (bool, error) {
		return time.Since(start) > 10*time.Millisecond, nil
	})
	if err != nil {
		t.Fatalf("Until = %v, want the call after the timeout to count", err)
	}
}

func TestUntilContextEnds(t *testing.T) {
	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	calls := 0
	err := Until(ctx, 0, time.Millisecond, func() (bool, error) {
		calls++
		if calls == 2 {
			cancel(cause)
		}
		return false, nil
	})
	if err != cause {
		t.Fatalf("Until = %v, want the context's cause", err)
	}
}

func TestUntilNoTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := Until(ctx, 0, time.Millisecond, func() (bool, error) { return false, nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Until = %v, want the context's deadline", err)
	}
}
