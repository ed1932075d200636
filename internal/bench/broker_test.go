package bench

import (
	"testing"

	"github.com/moha-project/moha/internal/testkit"
)

// startMosquitto starts a private broker on a free port and returns its
// address; the broker is killed when the test ends.
func startMosquitto(t testing.TB) string {
	t.Helper()
	return testkit.StartBroker(t).Addr
}

var waitFor = testkit.WaitFor

type syncBuffer = testkit.SyncBuffer
