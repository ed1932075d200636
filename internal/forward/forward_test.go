package forward

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moha-project/moha/internal/message"
)

type fakeDelivery struct {
	m     message.Message
	acked int
	mu    sync.Mutex
}

func (d *fakeDelivery) Msg() *message.Message { return &d.m }
func (d *fakeDelivery) Ack() {
	d.mu.Lock()
	d.acked++
	d.mu.Unlock()
}

// fakeSender records sends and lets the test decide each outcome.
type fakeSender struct {
	mu    sync.Mutex
	sent  map[string][]string
	dones []func(message.Outcome)
	auto  bool
}

func (s *fakeSender) Send(_ context.Context, peer string, m message.Message, done func(message.Outcome)) error {
	s.mu.Lock()
	if s.sent == nil {
		s.sent = map[string][]string{}
	}
	s.sent[peer] = append(s.sent[peer], m.Topic)
	if !s.auto {
		s.dones = append(s.dones, done)
	}
	s.mu.Unlock()
	if s.auto {
		done(message.Acked)
	}
	return nil
}

func TestRouterTargets(t *testing.T) {
	r := NewRouter([]string{"b", "a"}, true)
	if got := r.Targets("x/y", false, nil); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("unknown interest must over-state to every peer, got %v", got)
	}
	r.Apply("a", true, []string{"x/+", "y/#"}, nil)
	r.Apply("b", true, []string{"z"}, nil)
	for _, tc := range []struct {
		topic  string
		retain bool
		want   []string
	}{
		{"x/y", false, []string{"a"}},
		{"y", false, []string{"a"}},
		{"z", false, []string{"b"}},
		{"q", false, nil},
		{"q", true, []string{"a", "b"}},
		{"$SYS/x", false, nil},
	} {
		if got := r.Targets(tc.topic, tc.retain, nil); !slices.Equal(got, tc.want) {
			t.Errorf("Targets(%q, %v) = %v, want %v", tc.topic, tc.retain, got, tc.want)
		}
	}
	r.Apply("a", false, nil, []string{"x/+"})
	if got := r.Targets("x/y", false, nil); len(got) != 0 {
		t.Fatalf("after removal got %v", got)
	}
	if bad := r.Apply("a", false, []string{"bad/#/x"}, nil); len(bad) != 1 {
		t.Fatalf("invalid filter not reported: %v", bad)
	}
	if r.Filters("a") != 1 || r.Filters("nobody") != 0 {
		t.Fatalf("filter counts %d %d", r.Filters("a"), r.Filters("nobody"))
	}
}

// TestForwarderAcksAfterEveryTarget: a message is acknowledged to the
// broker only once every target peer reported an outcome; messages nobody
// wants are acknowledged at once and counted as skipped.
func TestForwarderAcksAfterEveryTarget(t *testing.T) {
	r := NewRouter([]string{"a", "b"}, true)
	r.Apply("a", true, []string{"t/#"}, nil)
	r.Apply("b", true, []string{"t/1"}, nil)
	s := &fakeSender{}
	f := NewForwarder(r, s, prometheus.NewRegistry(), HistoryLimits{})
	ctx := context.Background()

	both := &fakeDelivery{m: message.Message{Topic: "t/1", QoS: 1}}
	if err := f.forward(ctx, both, nil); err != nil {
		t.Fatal(err)
	}
	if len(s.dones) != 2 || both.acked != 0 {
		t.Fatalf("sends %d, acked %d before outcomes", len(s.dones), both.acked)
	}
	s.dones[0](message.Acked)
	if both.acked != 0 {
		t.Fatal("acked after one of two peers")
	}
	s.dones[1](message.Buffered)
	if both.acked != 1 {
		t.Fatalf("acked %d times after both peers", both.acked)
	}

	none := &fakeDelivery{m: message.Message{Topic: "other", QoS: 1}}
	if err := f.forward(ctx, none, nil); err != nil {
		t.Fatal(err)
	}
	if none.acked != 1 {
		t.Fatal("unrouted message not acked at once")
	}
	if v := testutil.ToFloat64(f.Metrics().Skipped.WithLabelValues("a")); v != 1 {
		t.Fatalf("skipped for a = %v, want 1", v)
	}
	if v := testutil.ToFloat64(f.Metrics().Skipped.WithLabelValues("b")); v != 1 {
		t.Fatalf("skipped for b = %v, want 1", v)
	}
}

// TestForwarderRunKeepsOrder: the queue is drained in order.
func TestForwarderRunKeepsOrder(t *testing.T) {
	r := NewRouter([]string{"a"}, true)
	s := &fakeSender{auto: true}
	f := NewForwarder(r, s, nil, HistoryLimits{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	var ds []*fakeDelivery
	for i := range 1000 {
		d := &fakeDelivery{m: message.Message{Topic: "o/" + strconv.Itoa(i), QoS: 1}}
		ds = append(ds, d)
		f.Enqueue(d)
	}
	for f.Pending() > 0 {
		runtimeGosched()
	}
	cancel()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, topic := range s.sent["a"] {
		if topic != "o/"+strconv.Itoa(i) {
			t.Fatalf("send %d is %q", i, topic)
		}
	}
	for i, d := range ds {
		if d.acked != 1 {
			t.Fatalf("delivery %d acked %d times", i, d.acked)
		}
	}
}

// BenchmarkForward measures the forwarding decision and bookkeeping for one
// message: trie match against two peers' interest (10k filters each), the
// per-peer hand-off and the ack countdown. The link and the broker are not
// included (they have their own benchmarks).
func BenchmarkForward(b *testing.B) {
	r := NewRouter([]string{"a", "b"}, true)
	var fa, fb []string
	for i := range 10000 {
		fa = append(fa, "test_1/"+strconv.Itoa(i))
		fb = append(fb, "dev/"+strconv.Itoa(i)+"/+/temp")
	}
	r.Apply("a", true, fa, nil)
	r.Apply("b", true, fb, nil)
	f := NewForwarder(r, &fakeSender{auto: true, sent: map[string][]string{}}, nil, testLimits)
	f.sender = discardSender{}
	d := &fakeDelivery{m: message.Message{Topic: "test_1/499", QoS: 1, Payload: make([]byte, 100)}}
	ctx := context.Background()
	targets := make([]string, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.forward(ctx, d, targets[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

type discardSender struct{}

func (discardSender) Send(_ context.Context, _ string, _ message.Message, done func(message.Outcome)) error {
	done(message.Acked)
	return nil
}

func runtimeGosched() { runtime.Gosched() }
