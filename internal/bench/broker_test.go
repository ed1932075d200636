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

// freePort returns a 127.0.0.1 port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	return port
}

var waitFor = testkit.WaitFor

type syncBuffer = testkit.SyncBuffer
