package forward

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/topic"
)

var testLimits = HistoryLimits{Window: 2 * time.Second, Bytes: 64 << 20, Margin: 50 * time.Millisecond}

func trieOf(t testing.TB, filters ...string) *topic.Trie {
	t.Helper()
	tr := topic.NewTrie()
	for _, f := range filters {
		if _, err := tr.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func expiring(topicName string, seconds uint32) *message.Message {
	return &message.Message{Topic: topicName, QoS: 1, Props: message.Properties{MessageExpiry: &seconds}}
}

func replayed(h *history, bit uint64, filters *topic.Trie, since, now int64) []string {
	var got []string
	h.replay(bit, filters, since, now, func(m message.Message) {
		s := m.Topic
		if m.Props.MessageExpiry != nil {
			s += "@" + (time.Duration(*m.Props.MessageExpiry) * time.Second).String()
		}
		got = append(got, s)
	})
	return got
}

// TestHistoryUnsentSince: whether a change made at since may have anything
// to replay to a peer (if not, no trie of its filters is built).
func TestHistoryUnsentSince(t *testing.T) {
	const sec = int64(time.Second)
	since := int64(1_000) * sec
	h := newHistory(testLimits)
	if h.unsentSince(0b01, since) {
		t.Fatal("an empty history has something to replay")
	}
	h.add(&message.Message{Topic: "a/early"}, since-int64(testLimits.Margin)-1, 0) // before since less the margin
	h.add(&message.Message{Topic: "a/sent"}, since+1, 0b01)                        // peer 0 had it
	if h.unsentSince(0b01, since) {
		t.Fatal("peer 0 had everything since the change, yet something is to replay")
	}
	if !h.unsentSince(0b10, since) {
		t.Fatal("peer 1 lacks a/sent, yet nothing is to replay")
	}
	if !h.unsentSince(0b01, since-int64(testLimits.Margin)-1) {
		t.Fatal("a change made before a/early should find it")
	}
}

// TestHistoryReplayDecisions: what a peer whose interest grew at `since` is
// sent from the history.
func TestHistoryReplayDecisions(t *testing.T) {
	const sec = int64(time.Second)
	base := int64(1_000) * sec
	since := base + 10*sec
	h := newHistory(testLimits)
	h.add(&message.Message{Topic: "a/early"}, since-int64(testLimits.Margin)-1, 0)  // before since less the margin: not replayed
	h.add(&message.Message{Topic: "a/margin"}, since-int64(testLimits.Margin)+1, 0) // within the margin: replayed
	h.add(&message.Message{Topic: "a/sent"}, since+1, 0b01)                         // the peer (bit 0) had it: not replayed
	h.add(&message.Message{Topic: "a/other-peer"}, since+2, 0b10)                   // another peer had it: replayed
	h.add(&message.Message{Topic: "b/unmatched"}, since+3, 0)                       // no new filter matches: not replayed
	h.add(expiring("a/expired", 1), since+4, 0)                                     // held 1.5 s, expiry 1 s: not replayed
	h.add(expiring("a/lasts", 10), since+5, 0)                                      // held 1.5 s, expiry 10 s: 9 s left
	now := since + 5 + 1500*int64(time.Millisecond)
	want := []string{"a/margin", "a/other-peer", "a/lasts@9s"}
	if got := replayed(h, 0b01, trieOf(t, "a/+"), since, now); !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if got := replayed(h, 0b01, trieOf(t, "a/+", "b/#"), since, now); !slices.Equal(got, []string{"b/unmatched"}) {
		t.Fatalf("a second replay sent %v, want only what the first did not match", got)
	}
	if got := replayed(h, 0b10, trieOf(t, "#"), since, now); !slices.Equal(got, []string{"a/margin", "a/sent", "b/unmatched", "a/lasts@9s"}) {
		t.Fatalf("the other peer got %v", got)
	}
}

// TestHistoryLimits: entries leave after the window; the byte cap evicts
// the oldest first and counts them.
func TestHistoryLimits(t *testing.T) {
	h := newHistory(HistoryLimits{Window: time.Second, Bytes: 3 * (entryOverhead + 1), Margin: 0})
	for i, tp := range []string{"1", "2", "3"} {
		h.add(&message.Message{Topic: tp}, int64(i), 0)
	}
	if h.len() != 3 || h.takeEvicted() != 0 {
		t.Fatalf("held %d", h.len())
	}
	h.add(&message.Message{Topic: "4"}, 3, 0)
	if h.len() != 3 || h.takeEvicted() != 1 {
		t.Fatalf("after the cap: held %d", h.len())
	}
	h.expire(int64(time.Second) + 3)
	if h.len() != 1 {
		t.Fatalf("after the window: held %d, want the newest", h.len())
	}
	if got := replayed(h, 1, trieOf(t, "#"), 0, int64(time.Second)+3); !slices.Equal(got, []string{"4"}) {
		t.Fatalf("replayed %v", got)
	}
	off := newHistory(HistoryLimits{})
	off.add(&message.Message{Topic: "x"}, 1, 0)
	if off.len() != 0 {
		t.Fatal("a history with no window held a message")
	}
}

// TestForwarderReplaysToGrowingInterest: a peer's delta adding a filter
// gets the messages accepted since that it did not get, before every later
// message, and never one it already had.
func TestForwarderReplaysToGrowingInterest(t *testing.T) {
	r := NewRouter([]string{"a", "b"}, true)
	r.Apply("a", true, []string{"x/1"}, nil)
	r.Apply("b", true, []string{"#"}, nil)
	s := &fakeSender{auto: true}
	reg := prometheus.NewRegistry()
	f := NewForwarder(r, s, reg, testLimits)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	subscribed := time.Now().UnixNano()
	for _, tp := range []string{"x/1", "x/2", "y", "x/3"} {
		f.Enqueue(&fakeDelivery{m: message.Message{Topic: tp, QoS: 1}})
	}
	applied := make(chan []string, 1)
	f.Interest("a", mesh.InterestChange{Added: []string{"x/+", "$share/g/y"}, At: subscribed}, func(bad []string) { applied <- bad })
	f.Enqueue(&fakeDelivery{m: message.Message{Topic: "x/4", QoS: 1}})
	if bad := <-applied; len(bad) != 0 {
		t.Fatalf("refused %v", bad)
	}
	for f.Pending() > 0 {
		runtimeGosched()
	}
	s.mu.Lock()
	got := slices.Clone(s.sent["a"])
	s.mu.Unlock()
	if want := []string{"x/1", "x/2", "x/3", "x/4"}; !slices.Equal(got, want) {
		t.Fatalf("peer a got %v, want %v (x/1 once, the missed ones replayed before x/4)", got, want)
	}
	if v := testutil.ToFloat64(f.Metrics().Replayed.WithLabelValues("a")); v != 2 {
		t.Fatalf("replayed counter %v, want 2", v)
	}
	if n := testutil.CollectAndCount(reg, "moha_interest_delay_seconds"); n != 1 {
		t.Fatalf("delay histogram not registered: %d", n)
	}
}

// BenchmarkForwardHistory is BenchmarkForward for a message one of the two
// peers does not want: it goes into the replay history.
func BenchmarkForwardHistory(b *testing.B) {
	r := NewRouter([]string{"a", "b"}, true)
	r.Apply("a", true, []string{"test_1/#"}, nil)
	r.Apply("b", true, []string{"dev/#"}, nil)
	f := NewForwarder(r, discardSender{}, nil, testLimits)
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

// TestAbandonedIsNeverAcked: a message one target abandoned (the mesh
// stopped) is not acknowledged to the broker, whatever the others said:
// the broker redelivers it to the agent's next run.
func TestAbandonedIsNeverAcked(t *testing.T) {
	r := NewRouter([]string{"a", "b"}, true)
	r.Apply("a", true, []string{"#"}, nil)
	r.Apply("b", true, []string{"#"}, nil)
	s := &fakeSender{}
	f := NewForwarder(r, s, nil, HistoryLimits{})
	d := &fakeDelivery{m: message.Message{Topic: "t", QoS: 1}}
	if err := f.forward(context.Background(), d, nil); err != nil {
		t.Fatal(err)
	}
	s.dones[0](message.Abandoned)
	s.dones[1](message.Acked)
	if d.acked != 0 {
		t.Fatal("an abandoned message was acknowledged to the broker")
	}
}
