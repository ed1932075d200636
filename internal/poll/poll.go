// Package poll waits for a condition that no event announces (a port that
// starts listening, an agent that becomes ready, a status that settles) by
// checking it at an interval until it holds, fails, a timeout passes or the
// context ends. It is the one copy of that loop; it depends on the standard
// library only, so that every package, test helpers included, can use it.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is wrapped by the error Until returns when its timeout passes.
var ErrTimeout = errors.New("poll: timed out")

// Until calls cond at once and then interval after each call returns, until
// cond reports true (Until returns nil) or an error (Until returns it as is:
// the condition can no longer hold, say the process it waits for exited).
// It gives up with an error wrapping ErrTimeout once timeout has passed since
// the start (no limit when timeout <= 0), and with context.Cause(ctx) when ctx
// ends first. cond is always called at least once, and once more after the
// timeout has passed, so a condition met during the last wait is not missed.
func Until(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	// A timer restarted after each call, rather than a ticker: a slow cond
	// (an HTTP request) is not called back to back.
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if timeout > 0 && time.Now().After(deadline) {
			return fmt.Errorf("%w after %v", ErrTimeout, timeout)
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		}
	}
}
