package agent

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

// refusingBroker completes each Publish with the next error of its script
// (nil once the script is used up): the broker's refusals, without a broker.
type refusingBroker struct {
	mu     sync.Mutex
	script []error
	calls  int
}

func (b *refusingBroker) Publish(_ message.Message, done func(error)) {
	b.mu.Lock()
	var err error
	if b.calls < len(b.script) {
		err = b.script[b.calls]
	}
	b.calls++
	b.mu.Unlock()
	go done(err)
}

func (b *refusingBroker) published() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// TestRepublisherRetriesTransientRefusals (issue 14 §3): a refusal that may
// pass (quota exceeded, unspecified) is retried with backoff and the peer
// is acknowledged once the broker takes the message; one that will repeat
// (not authorized) drops it, counted by reason; a transient refusal that
// persists through every retry is dropped and counted too.
func TestRepublisherRetriesTransientRefusals(t *testing.T) {
	cases := []struct {
		name              string
		script            []error
		published         int
		retries, rejected float64
	}{
		{"quota, then taken", []error{session.NewRefusal(0x97), session.NewRefusal(0x80)}, 3, 2, 0},
		{"not authorized", []error{session.NewRefusal(0x87)}, 1, 0, 1},
		{"quota every time", []error{session.NewRefusal(0x97), session.NewRefusal(0x97), session.NewRefusal(0x97), session.NewRefusal(0x97)}, 4, 3, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics(prometheus.NewRegistry())
			r := newRepublisher(slog.New(slog.NewTextHandler(io.Discard, nil)), m)
			r.first, r.max, r.attempts = time.Millisecond, 4*time.Millisecond, 3
			b := &refusingBroker{script: tc.script}
			r.setSession(b)
			acked := make(chan struct{}, 2)
			r.deliver("peer", message.Message{Topic: "t", QoS: 1}, func() { acked <- struct{}{} })
			select {
			case <-acked:
			case <-time.After(5 * time.Second):
				t.Fatal("the peer was never acknowledged")
			}
			if got := b.published(); got != tc.published {
				t.Errorf("published %d times, want %d", got, tc.published)
			}
			if got := sumCounters(t, m.inboundRetries); got != tc.retries {
				t.Errorf("retries %v, want %v", got, tc.retries)
			}
			if got := sumCounters(t, m.inboundRejected); got != tc.rejected {
				t.Errorf("rejected %v, want %v", got, tc.rejected)
			}
			if r.Pending() != 0 {
				t.Error("still pending after the outcome")
			}
		})
	}
}

// sumCounters adds up every child of a counter vector.
func sumCounters(t *testing.T, v *prometheus.CounterVec) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	go func() { v.Collect(ch); close(ch) }()
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		sum += d.GetCounter().GetValue()
	}
	return sum
}

// recordingBroker refuses the first publish transiently and records what
// it stores: the retained flag of each publish it takes.
type recordingBroker struct {
	mu       sync.Mutex
	calls    int
	retained []bool
}

func (b *recordingBroker) Publish(m message.Message, done func(error)) {
	b.mu.Lock()
	b.calls++
	first := b.calls == 1
	if !first {
		b.retained = append(b.retained, m.Retain)
	}
	b.mu.Unlock()
	if first {
		go done(session.NewRefusal(0x97))
		return
	}
	go done(nil)
}

// TestRetryDoesNotStoreASupersededRetainedWrite: a peer's retained write is
// refused for a moment (quota); by the time it is retried a newer write to
// the topic was applied. Stored then, it would overwrite the newer value on
// this node only (retained state diverging across nodes): the retry
// publishes it live, not retained.
func TestRetryDoesNotStoreASupersededRetainedWrite(t *testing.T) {
	for _, superseded := range []bool{false, true} {
		r := newRepublisher(slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics(prometheus.NewRegistry()))
		r.first, r.max, r.attempts = time.Millisecond, time.Millisecond, 3
		r.superseded = func(*message.Message) bool { return superseded }
		b := &recordingBroker{}
		r.setSession(b)
		acked := make(chan struct{}, 1)
		r.deliver("peer", message.Message{Topic: "t", QoS: 1, Retain: true, Written: 5}, func() { acked <- struct{}{} })
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatal("never acknowledged")
		}
		b.mu.Lock()
		got := b.retained
		b.mu.Unlock()
		if len(got) != 1 || got[0] != !superseded {
			t.Fatalf("superseded %v: the retry stored retained=%v, want %v", superseded, got, !superseded)
		}
	}
}
