package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestMeasureInterest: a small run reports propagation and memory, and the
// table names them.
func TestMeasureInterest(t *testing.T) {
	bin := mohaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, err := MeasureInterest(ctx, InterestOptions{Subscriptions: []int{500}, Clients: 3, PerPacket: 100, AgentBinary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if r.Subscriptions != 500 || r.Propagation < r.Subscribe || r.Propagation <= 0 || r.HolderRSS <= 0 || r.PeerRSS <= 0 {
		t.Fatalf("implausible row %+v", r)
	}
	var buf bytes.Buffer
	if err := WriteInterestTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "propagated to peer") || !strings.Contains(buf.String(), "500") {
		t.Fatalf("table:\n%s", buf.String())
	}
	if _, err := MeasureInterest(ctx, InterestOptions{Subscriptions: []int{0}, AgentBinary: bin}); err == nil {
		t.Fatal("0 subscriptions accepted")
	}
}
