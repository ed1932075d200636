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

// TestInterestBurstLosesNoLogLine: 200000 subscriptions made as fast as 100
// persistent-session clients can (connect, subscribe in packets of 1000,
// disconnect) all reach the peer, and the subscribing node never turns
// degraded. The broker reads the agent's acknowledgements one per loop turn
// while it handles the subscriptions, so their log lines queue: with the
// queue bound at 100000 (+ 65535 in flight) it dropped 34000 of them.
func TestInterestBurstLosesNoLogLine(t *testing.T) {
	bin := mohaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 200000
	rows, err := MeasureInterest(ctx, InterestOptions{Subscriptions: []int{n}, Clients: 100, Persistent: true, AgentBinary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d subscriptions: subscribed in %v, known to the peer after %v; agent RSS %d MiB (holder), %d MiB (peer)",
		n, rows[0].Subscribe.Round(time.Millisecond), rows[0].Propagation.Round(time.Millisecond), rows[0].HolderRSS>>20, rows[0].PeerRSS>>20)
}
