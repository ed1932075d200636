package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestStorm: 300 persistent sessions on node2; its broker restarts while
// node1 publishes to them; every client reconnects within 2 s and finds its
// session; node1 routes by exactly their filters again; no acknowledged
// message is lost.
func TestStorm(t *testing.T) {
	bin := mohaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := MeasureStorm(ctx, StormOptions{Clients: 300, Within: 2 * time.Second, Rate: 200, AgentBinary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteStormTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
	if r.SessionPresent != r.Clients {
		t.Errorf("%d of %d clients found their session", r.SessionPresent, r.Clients)
	}
	if r.Published == 0 || r.Lost != 0 {
		t.Errorf("published %d, lost %d: want some, none lost", r.Published, r.Lost)
	}
	if !strings.Contains(buf.String(), "session present") {
		t.Errorf("table:\n%s", buf.String())
	}
}
