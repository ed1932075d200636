package bench

import (
	"testing"
	"time"
)

func TestTallyCountsLossDuplicatesAndOrder(t *testing.T) {
	p := &plan{
		Publishers:  []endpoint{{Topic: "t"}, {Topic: "other"}},
		Subscribers: []endpoint{{Topic: "t"}},
		Messages:    5,
		Expected:    5,
	}
	tl := newTally(p, 42)
	now := time.Now()
	send := func(h header) { tl.record(0, encodePayload(h, 40), now) }
	sentAt := now.Add(-time.Millisecond).UnixNano()
	for _, seq := range []uint32{0, 2, 1, 2} { // 1 out of order, 2 duplicated
		send(header{RunID: 42, Publisher: 0, Sequence: seq, SentAt: sentAt})
	}
	send(header{RunID: 7, Publisher: 0, Sequence: 3})  // another run
	send(header{RunID: 42, Publisher: 9, Sequence: 3}) // no such publisher
	send(header{RunID: 42, Publisher: 0, Sequence: 5}) // beyond Messages
	send(header{RunID: 42, Publisher: 1, Sequence: 0}) // stream not expected
	tl.record(0, []byte("hello"), now)                 // not a bench payload

	s := tl.summary()
	if s.Delivered != 3 || s.Duplicated != 1 || s.OutOfOrder != 1 || s.Stray != 5 {
		t.Fatalf("summary %+v: want 3 delivered, 1 duplicated, 1 out of order, 5 stray", s)
	}
	if len(s.Latencies) != 3 || s.Latencies[0] != int64(time.Millisecond) {
		t.Errorf("latencies %v, want three of 1ms", s.Latencies)
	}
	select {
	case <-tl.complete:
		t.Fatal("complete before every expected delivery")
	default:
	}
	send(header{RunID: 42, Publisher: 0, Sequence: 3, SentAt: sentAt})
	send(header{RunID: 42, Publisher: 0, Sequence: 4, SentAt: sentAt})
	select {
	case <-tl.complete:
	default:
		t.Fatal("not complete after every expected delivery")
	}
	if got := tl.lastArrival.Load(); got != now.UnixNano() {
		t.Errorf("lastArrival = %d, want %d", got, now.UnixNano())
	}
}

func TestTallyWithNothingExpectedIsComplete(t *testing.T) {
	tl := newTally(&plan{Subscribers: []endpoint{{}}, Messages: 1}, 1)
	select {
	case <-tl.complete:
	default:
		t.Fatal("a run expecting nothing must not wait for deliveries")
	}
}

func TestPercentile(t *testing.T) {
	sorted := make([]int64, 100)
	for i := range sorted {
		sorted[i] = int64(i + 1)
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.95: 95, 0.99: 99, 1: 100, 0.001: 1} {
		if got := percentile(sorted, q); got != want {
			t.Errorf("percentile(%v) = %d, want %d", q, got, want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %d", got)
	}
}
