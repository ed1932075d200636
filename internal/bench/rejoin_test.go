package bench

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestRejoin: node2 comes back with an empty broker while node1 holds 5000
// retained topics and gets every one; whatever the live probe sent
// meanwhile arrived. (At 50000 topics the probe's messages are late by
// seconds and some are lost: issue 17 §3, docs/benchmarks-journal.md.)
func TestRejoin(t *testing.T) {
	bin := mohaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := MeasureRejoin(ctx, RejoinOptions{Topics: 5000, AgentBinary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteRejoinTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	if r.Rejoin <= 0 || r.LiveLost != 0 {
		t.Fatalf("rejoin %v, live messages lost %d", r.Rejoin, r.LiveLost)
	}
}
