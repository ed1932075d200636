package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// outcomes records each message's done calls and fails on a second one.
type outcomes struct {
	t     testing.TB
	mu    sync.Mutex
	got   map[int]Outcome
	order []int // indexes in the order Acked arrived
}

func newOutcomes(t testing.TB) *outcomes { return &outcomes{t: t, got: map[int]Outcome{}} }

func (o *outcomes) done(i int) func(Outcome) {
	return func(out Outcome) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if prev, ok := o.got[i]; ok {
			o.t.Errorf("message %d: done called twice (%v, then %v)", i, prev, out)
		}
		o.got[i] = out
		if out == Acked {
			o.order = append(o.order, i)
		}
	}
}

func (o *outcomes) count(want Outcome) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, out := range o.got {
		if out == want || want == 0 {
			n++
		}
	}
	return n
}

// indexed is a message whose payload starts with its index.
func indexed(i int) message.Message {
	m := fullMessage(i)
	m.Payload = binary.BigEndian.AppendUint32(nil, uint32(i))
	m.Payload = append(m.Payload, make([]byte, 96)...)
	return m
}

func indexOf(m message.Message) int { return int(binary.BigEndian.Uint32(m.Payload)) }

// pair starts b (acceptor) then a (dialer, a < b) and waits for the link.
func pair(t *testing.T, cfgA, cfgB func(*Config), recA, recB *recorder) (a, b *testMesh) {
	t.Helper()
	cb := testConfig(t, "b", map[string]string{"a": closedAddr(t)})
	if cfgB != nil {
		cfgB(&cb)
	}
	b = startMesh(t, cb, recB.handlers())
	ca := testConfig(t, "a", map[string]string{"b": b.addr()})
	if cfgA != nil {
		cfgA(&ca)
	}
	a = startMesh(t, ca, recA.handlers())
	waitFor(t, 5*time.Second, "a-b link up", func() bool { return a.up("b") && b.up("a") })
	return a, b
}

func TestForward10000InOrder(t *testing.T) {
	recB := newRecorder()
	a, b := pair(t, nil, nil, newRecorder(), recB)
	const n = 10000
	out := newOutcomes(t)
	for i := range n {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "all acked", func() bool { return out.count(Acked) == n })
	recB.mu.Lock()
	got := recB.msgs["a"]
	recB.mu.Unlock()
	if len(got) != n {
		t.Fatalf("b received %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if want := indexed(i); !msgEqual(m, want) {
			t.Fatalf("message %d: got %+v, want %+v", i, m, want)
		}
	}
	for i, idx := range out.order {
		if idx != i {
			t.Fatalf("Acked out of order: position %d is message %d", i, idx)
		}
	}
	batches := a.peers["b"].batchesSent.Load()
	acks := metric(t, b.reg, "moha_ack_frames_total", map[string]string{"peer": "a"})
	t.Logf("%d messages in %d PUBLISH_BATCH frames, %v ACK frames", n, batches, acks)
	// Batch sizes depend on how the sender's loop and the writer interleave
	// (62-416 frames on a quiet machine, 1602 under a full parallel test
	// run); a frame or an ack per message is what must not happen.
	if batches >= n/2 || acks >= n/10 || acks < 1 {
		t.Fatalf("%d batches and %v ACK frames for %d messages: batching does not work", batches, acks, n)
	}
	st := a.peerStatus("b")
	if st.SentMessages != n || st.Queued != 0 || st.InFlight != 0 || st.SentBytes == 0 {
		t.Fatalf("status after the run: %+v", st)
	}
	if got := metric(t, b.reg, "moha_received_messages_total", map[string]string{"peer": "a"}); got != n {
		t.Fatalf("moha_received_messages_total = %v", got)
	}
	wire := metric(t, a.reg, "moha_forward_bytes_total", map[string]string{"peer": "b"})
	if read := metric(t, b.reg, "moha_link_bytes_read_total", map[string]string{"peer": "a"}); read < wire-1000 || read > wire {
		t.Fatalf("b read %v bytes, a wrote %v", read, wire)
	}
}

// TestAcksInRandomOrder: the receiver completes messages in random order
// from another goroutine; the sender must only ever see an ack covering
// messages whose ack was really called, and in order.
func TestAcksInRandomOrder(t *testing.T) {
	const n = 3000
	var called [n]atomic.Bool
	var mu sync.Mutex
	var pending []func()
	recB := newRecorder()
	recB.onDeliver = func(_ string, m message.Message, ack func()) {
		i := indexOf(m)
		mu.Lock()
		pending = append(pending, func() { called[i].Store(true); ack() })
		mu.Unlock()
	}
	a, _ := pair(t, nil, nil, newRecorder(), recB)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // completes acks in random order, a few at a time
		for {
			mu.Lock()
			batch := pending
			pending = nil
			mu.Unlock()
			rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			for _, ack := range batch {
				ack()
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	out := newOutcomes(t)
	var violations atomic.Int32
	for i := range n {
		done := out.done(i)
		err := a.Send(context.Background(), "b", indexed(i), func(o Outcome) {
			if o == Acked && !called[i].Load() {
				violations.Add(1)
			}
			done(o)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "all acked", func() bool { return out.count(Acked) == n })
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d messages reported Acked before the receiver acked them", v)
	}
	for i, idx := range out.order {
		if idx != i {
			t.Fatalf("Acked out of order: position %d is message %d", i, idx)
		}
	}
}

// TestAcksCoalesced: a receiver whose broker accepts messages one at a time
// (as PUBACKs arrive) must not answer each with its own ACK frame, and the
// acks must still arrive promptly.
func TestAcksCoalesced(t *testing.T) {
	const n = 400
	acks := make(chan func(), n)
	recB := newRecorder()
	recB.onDeliver = func(_ string, _ message.Message, ack func()) { acks <- ack }
	// A delay well above the default keeps the count of coalesced frames
	// far below the bound even if a loaded machine stretches the run.
	a, b := pair(t, nil, func(c *Config) { c.AckDelay = 50 * time.Millisecond }, newRecorder(), recB)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // one completion every ~50 µs, like a busy broker's PUBACKs
		for {
			select {
			case ack := <-acks:
				ack()
				deadline := time.Now().Add(50 * time.Microsecond)
				for time.Now().Before(deadline) {
				}
			case <-stop:
				return
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	out := newOutcomes(t)
	for i := range n {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all acked", func() bool { return out.count(Acked) == n })
	frames := metric(t, b.reg, "moha_ack_frames_total", map[string]string{"peer": "a"})
	t.Logf("%d messages completed one at a time: %v ACK frames", n, frames)
	if frames > n/8 {
		t.Fatalf("%v ACK frames for %d messages completed one at a time: acks are not coalesced", frames, n)
	}
}

// TestShutdownFlushesAcks: messages the receiver's broker accepted are
// acknowledged when its mesh shuts down, even while their ACK waits to be
// coalesced; otherwise the sender would send them again (duplicates).
func TestShutdownFlushesAcks(t *testing.T) {
	recB := newRecorder()
	a, b := pair(t, nil, func(c *Config) { c.AckDelay = time.Hour }, newRecorder(), recB)
	const n = 10
	out := newOutcomes(t)
	for i := range n {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "b received all", func() bool {
		recB.mu.Lock()
		defer recB.mu.Unlock()
		return len(recB.msgs["a"]) == n
	})
	if got := out.count(Acked); got != 0 {
		t.Fatalf("%d acked before the delay or the shutdown: the test proves nothing", got)
	}
	b.stop(t)
	waitFor(t, 5*time.Second, "all acked after b shut down", func() bool { return out.count(Acked) == n })
}

func TestAckTrackerCumulative(t *testing.T) {
	var tr ackTracker
	if err := tr.receive(1, 5); err != nil {
		t.Fatal(err)
	}
	tr.endBatch()
	for _, step := range []struct {
		seq  uint64
		base uint64
	}{{3, 0}, {5, 0}, {2, 0}, {2, 0}, {1, 3}, {4, 5}, {9, 5}} {
		tr.complete(step.seq)
		if got := tr.completed(); got != step.base {
			t.Fatalf("after completing %d: base %d, want %d", step.seq, got, step.base)
		}
	}
	if err := tr.receive(7, 1); err == nil {
		t.Fatal("a batch that skips a seq was accepted")
	}
}

// TestLinkLossAndRestart: b dies mid-stream; what a had in flight becomes
// Buffered, new Sends are Buffered, and once b is back on the same address
// every message arrives (duplicates allowed, loss not).
func TestLinkLossAndRestart(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	record := func(_ string, m message.Message, ack func()) {
		mu.Lock()
		seen[indexOf(m)]++
		mu.Unlock()
		ack()
	}
	recB := newRecorder()
	recB.onDeliver = record
	a, b := pair(t, func(c *Config) { c.Window = 64 }, nil, newRecorder(), recB)
	bAddr := b.addr()
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}

	const n = 3000
	out := newOutcomes(t)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
				t.Error(err)
				return
			}
			if i%100 == 0 {
				time.Sleep(time.Millisecond) // spread the stream over b's death
			}
		}
	}()
	waitFor(t, 10*time.Second, "b receiving", func() bool { return received() >= 300 })
	b.stop(t)
	waitFor(t, 5*time.Second, "a sees b down", func() bool { return !a.up("b") })
	<-sent
	waitFor(t, 5*time.Second, "an outcome for every message", func() bool { return out.count(0) == n })
	if out.count(Buffered) == 0 || out.count(Dropped) != 0 {
		t.Fatalf("after b died: %d Acked, %d Buffered, %d Dropped", out.count(Acked), out.count(Buffered), out.count(Dropped))
	}

	recB2 := newRecorder()
	recB2.onDeliver = record
	cb := testConfig(t, "b", map[string]string{"a": closedAddr(t)})
	cb.Listen = bAddr
	startMesh(t, cb, recB2.handlers())
	waitFor(t, 10*time.Second, "every message delivered after the restart", func() bool { return received() == n })
	waitFor(t, 5*time.Second, "a's buffer empty", func() bool {
		st := a.peerStatus("b")
		return st.Up && st.Queued == 0 && st.InFlight == 0
	})
	if got := metric(t, a.reg, "moha_link_connects_total", map[string]string{"peer": "b"}); got != 2 {
		t.Fatalf("moha_link_connects_total = %v, want 2", got)
	}
}

func TestOverflowWhileDown(t *testing.T) {
	cfg := testConfig(t, "a", map[string]string{"b": closedAddr(t)})
	cfg.BufferMessages = 100
	a := startMesh(t, cfg, newRecorder().handlers())
	out := newOutcomes(t)
	for i := range 150 {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "all outcomes", func() bool { return out.count(0) == 150 })
	if out.count(Buffered) != 100 || out.count(Dropped) != 50 {
		t.Fatalf("%d Buffered, %d Dropped; want 100 and 50", out.count(Buffered), out.count(Dropped))
	}
	if got := metric(t, a.reg, "moha_peer_dropped_messages_total", map[string]string{"peer": "b", "reason": dropOverflow}); got != 50 {
		t.Fatalf("dropped metric = %v, want 50", got)
	}
	if st := a.peerStatus("b"); st.Dropped != 50 || st.Queued != 100 {
		t.Fatalf("status: %+v", st)
	}
	if got := metric(t, a.reg, "moha_peer_queue_messages", map[string]string{"peer": "b"}); got != 100 {
		t.Fatalf("queue gauge = %v", got)
	}

	// Unknown peers are Dropped too, never an error.
	unknown := newOutcomes(t)
	if err := a.Send(context.Background(), "nobody", indexed(0), unknown.done(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "unknown peer outcome", func() bool { return unknown.count(Dropped) == 1 })
}

// TestSendWaitBackpressure: SendWait, for bulk transfers with a goroutine
// of their own, waits for room while the link is up and the buffer is full.
func TestSendWaitBackpressure(t *testing.T) {
	held := &heldAcks{}
	recB := held.recorder()
	a, _ := pair(t, func(c *Config) { c.BufferMessages = 10 }, nil, newRecorder(), recB)
	out := newOutcomes(t)
	for i := range 10 {
		if err := a.SendWait(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := a.SendWait(ctx, "b", indexed(10), out.done(10)); err != context.DeadlineExceeded {
		t.Fatalf("Send on a full buffer with the link up: %v, want deadline exceeded", err)
	}
	unblocked := make(chan error, 1)
	go func() { unblocked <- a.SendWait(context.Background(), "b", indexed(11), out.done(11)) }()
	waitFor(t, 5*time.Second, "b holds 10 messages", func() bool { return held.count() == 10 })
	held.ackAll()
	select {
	case err := <-unblocked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send still blocked after the peer acked")
	}
	waitFor(t, 5*time.Second, "b holds the 11th", func() bool { return held.count() == 11 })
	held.ack(10)
	waitFor(t, 5*time.Second, "11 acked", func() bool { return out.count(Acked) == 11 })
	out.mu.Lock()
	_, called := out.got[10]
	out.mu.Unlock()
	if called {
		t.Fatal("done called for the Send that returned ctx.Err()")
	}
}

// TestLiveOvertakesBulk (issue 17 §3): a live message sent while a bulk
// transfer fills the buffer goes out at once, behind only the bulk
// messages' bounded share of the window, never behind the whole transfer;
// the bulk messages then all arrive, in order.
func TestLiveOvertakesBulk(t *testing.T) {
	held := &heldAcks{}
	recB := held.recorder()
	const window = 16 // a bulk share of 4 in flight, 16 held
	a, _ := pair(t, func(c *Config) { c.Window = window }, nil, newRecorder(), recB)
	const bulk = 40
	sent := make(chan error, 1)
	go func() {
		for i := range bulk {
			if err := a.SendWait(context.Background(), "b", indexed(i), nil); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	waitFor(t, 5*time.Second, "the bulk share of the window in flight", func() bool {
		st := a.peerStatus("b")
		return st.InFlight == window/4 && st.Queued == window-window/4
	})
	live := message.Message{Topic: "live", Payload: []byte("now"), QoS: 1}
	if err := a.Send(context.Background(), "b", live, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b receives the live message with no bulk one acknowledged", func() bool { return recB.count("a") == window/4+1 })
	if got := recB.msgsFrom("a")[window/4].Topic; got != "live" {
		t.Fatalf("message %d at b is %q, want the live one", window/4, got)
	}
	for {
		for _, ack := range held.take() {
			ack()
		}
		if recB.count("a") == bulk+1 {
			break
		}
		waitFor(t, 5*time.Second, "more bulk messages at b", func() bool { return held.count() > 0 })
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, m := range recB.msgsFrom("a") {
		if m.Topic == "live" {
			continue
		}
		if got := indexOf(m); got != next {
			t.Fatalf("bulk message %d at b is number %d", next, got)
		}
		next++
	}
}

// TestSendWaitRefusedWhileDown: a bulk message for a peer whose link is
// down is refused at once, neither buffered nor dropped.
func TestSendWaitRefusedWhileDown(t *testing.T) {
	a := startMesh(t, testConfig(t, "a", map[string]string{"b": closedAddr(t)}), newRecorder().handlers())
	out := newOutcomes(t)
	if err := a.SendWait(context.Background(), "b", indexed(0), out.done(0)); !errors.Is(err, ErrPeerDown) {
		t.Fatalf("SendWait to a peer that is down: %v, want ErrPeerDown", err)
	}
	if st := a.peerStatus("b"); st.Queued != 0 || st.Dropped != 0 {
		t.Fatalf("peer status after a refused bulk message: %+v, want nothing held or dropped", st)
	}
}

// TestFullPeerDoesNotBlock (issue 14 §2): a peer whose link is up but that
// acknowledges nothing (its broker hung) fills its buffer; Send then drops
// for it, counted as "full", at once, and another peer keeps getting
// everything.
func TestFullPeerDoesNotBlock(t *testing.T) {
	stuck := newRecorder()
	stuck.onDeliver = func(string, message.Message, func()) {} // never acks
	c := startMesh(t, testConfig(t, "c", map[string]string{"a": closedAddr(t), "b": closedAddr(t)}), stuck.handlers())
	recB := newRecorder()
	b := startMesh(t, testConfig(t, "b", map[string]string{"a": closedAddr(t), "c": c.addr()}), recB.handlers())
	ca := testConfig(t, "a", map[string]string{"b": b.addr(), "c": c.addr()})
	ca.BufferMessages = 50
	a := startMesh(t, ca, newRecorder().handlers())
	waitFor(t, 5*time.Second, "a linked to b and c", func() bool { return a.up("b") && a.up("c") })
	out := newOutcomes(t)
	const n = 500
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for i := range n {
		if err := a.Send(ctx, "c", indexed(i), nil); err != nil {
			t.Fatalf("send %d to the stuck peer: %v (it held the sender up)", i, err)
		}
	}
	for i := range n {
		if err := a.SendWait(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "b acked everything", func() bool { return out.count(Acked) == n })
	if got := metric(t, a.reg, "moha_peer_dropped_messages_total", map[string]string{"peer": "c", "reason": "full"}); got != n-50 {
		t.Fatalf("dropped for the stuck peer: %v, want %d (all but its buffer of 50)", got, n-50)
	}
}

func TestInterestGraceExpiry(t *testing.T) {
	recA := newRecorder()
	a, b := pair(t, func(c *Config) { c.InterestGrace = 300 * time.Millisecond }, nil, recA, newRecorder())
	b.Advertise([]string{"b/#"}, nil)
	waitFor(t, 5*time.Second, "a learns b's interest", func() bool { return len(recA.view("b")) == 1 })
	b.stop(t)
	waitFor(t, 5*time.Second, "a sees b down", func() bool { return !a.up("b") })

	out := newOutcomes(t)
	for i := range 20 {
		a.Send(context.Background(), "b", indexed(i), out.done(i))
	}
	waitFor(t, 5*time.Second, "b gone, its interest emptied", func() bool {
		evs := recA.interestEvents("b")
		last := evs[len(evs)-1]
		return a.peerStatus("b").Gone && last.replace && len(last.added) == 0
	})
	if st := a.peerStatus("b"); st.Queued != 0 || st.Dropped != 20 {
		t.Fatalf("status of the gone peer: %+v", st)
	}
	if got := metric(t, a.reg, "moha_peer_dropped_messages_total", map[string]string{"peer": "b", "reason": dropGone}); got != 20 {
		t.Fatalf("gone drops = %v", got)
	}
	if out.count(Buffered) != 20 {
		t.Fatalf("%d Buffered before b was gone, want 20", out.count(Buffered))
	}
	after := newOutcomes(t)
	a.Send(context.Background(), "b", indexed(0), after.done(0))
	waitFor(t, 5*time.Second, "Send to a gone peer dropped", func() bool { return after.count(Dropped) == 1 })
}

func TestThreeNodeMesh(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	recs := map[string]*recorder{}
	meshes := map[string]*testMesh{}
	addrs := map[string]string{}
	for i := len(names) - 1; i >= 0; i-- { // highest first: it only accepts
		name := names[i]
		peers := map[string]string{}
		for _, other := range names {
			switch {
			case other == name:
			case other > name:
				peers[other] = addrs[other]
			default:
				peers[other] = closedAddr(t) // never dialed: the lower name dials
			}
		}
		recs[name] = newRecorder()
		meshes[name] = startMesh(t, testConfig(t, name, peers), recs[name].handlers())
		addrs[name] = meshes[name].addr()
		meshes[name].Advertise([]string{"from/" + name}, nil)
	}
	waitFor(t, 5*time.Second, "full mesh up", func() bool {
		for _, m := range meshes {
			for _, s := range m.Status() {
				if !s.Up {
					return false
				}
			}
		}
		return true
	})
	for _, name := range names {
		for _, other := range names {
			if other == name {
				continue
			}
			waitFor(t, 5*time.Second, fmt.Sprintf("%s learns %s's interest", name, other), func() bool {
				v := recs[name].view(other)
				return len(v) == 1 && v[0] == "from/"+other
			})
			out := newOutcomes(t)
			meshes[name].Send(context.Background(), other, indexed(1), out.done(1))
			waitFor(t, 5*time.Second, "acked", func() bool { return out.count(Acked) == 1 })
		}
	}
	for _, name := range names {
		if got := recs[name].count(names[0]) + recs[name].count(names[1]) + recs[name].count(names[2]); got != 2 {
			t.Errorf("%s received %d messages, want 2", name, got)
		}
	}
}

// BenchmarkForward sends 100-byte messages a -> b over loopback TCP and
// reports the bytes written on the link per message (both directions).
func BenchmarkForward(b *testing.B) {
	cb := testConfig(b, "b", map[string]string{"a": closedAddr(b)})
	var delivered atomic.Int64
	mb := startMesh(b, cb, Handlers{Deliver: func(_ string, _ message.Message, ack func()) { delivered.Add(1); ack() }})
	ma := startMesh(b, testConfig(b, "a", map[string]string{"b": mb.addr()}), Handlers{})
	waitFor(b, 5*time.Second, "link up", func() bool { return ma.up("b") })
	msg := message.Message{Topic: "bench/topic/1", Payload: make([]byte, 100), QoS: 1}
	var acked atomic.Int64
	done := func(o Outcome) {
		if o == Acked {
			acked.Add(1)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := ma.Send(context.Background(), "b", msg, done); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, 60*time.Second, "all acked", func() bool { return acked.Load() == int64(b.N) })
	b.StopTimer()
	sa, sb := ma.peerStatus("b"), mb.peerStatus("a")
	b.ReportMetric(float64(sa.SentBytes)/float64(b.N), "wire-B/msg")
	b.ReportMetric(float64(sb.SentBytes)/float64(b.N), "ack-B/msg")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// TestStopAbandonsWhatLivePeersHeld (issue 14 §1): when the mesh stops,
// the messages a live peer had not acknowledged are reported Abandoned, so
// that the agent leaves them unacknowledged for its broker to redeliver —
// never Buffered (the agent would acknowledge them, and the stop discards
// the buffer).
func TestStopAbandonsWhatLivePeersHeld(t *testing.T) {
	recB := newRecorder()
	recB.onDeliver = func(string, message.Message, func()) {} // b never acks
	a, _ := pair(t, nil, nil, newRecorder(), recB)
	out := newOutcomes(t)
	const n = 20
	for i := range n {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "b received all", func() bool {
		recB.mu.Lock()
		defer recB.mu.Unlock()
		return len(recB.msgs["a"]) == n
	})
	a.stop(t)
	if got := out.count(Abandoned); got != n {
		t.Fatalf("%d of %d abandoned at the stop (buffered %d, dropped %d)", got, n, out.count(Buffered), out.count(Dropped))
	}
}

// TestStalledPeerIsBuffered (issue 14 §2): a peer whose link stays up but
// that acknowledges nothing for StallAfter is treated as down: what it
// holds is reported Buffered (once), new messages are Buffered at once, and
// when it acknowledges again it is no longer stalled and nothing is lost.
func TestStalledPeerIsBuffered(t *testing.T) {
	held := &heldAcks{}
	recB := held.recorder()
	a, _ := pair(t, func(c *Config) { c.StallAfter = 100 * time.Millisecond }, nil, newRecorder(), recB)
	out := newOutcomes(t)
	for i := range 10 {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the 10 reported Buffered", func() bool { return out.count(Buffered) == 10 })
	if !a.peerStatus("b").Stalled {
		t.Fatal("b not shown stalled")
	}
	if err := a.Send(context.Background(), "b", indexed(10), out.done(10)); err != nil {
		t.Fatal(err)
	}
	// b acknowledges nothing: a Buffered outcome can only be the stall's.
	waitFor(t, 5*time.Second, "the 11th Buffered", func() bool { return out.count(Buffered) == 11 })
	waitFor(t, 5*time.Second, "b holds all 11", func() bool { return held.count() == 11 })
	held.ackAll()
	waitFor(t, 5*time.Second, "b no longer stalled", func() bool { return !a.peerStatus("b").Stalled })
	if got := metric(t, a.reg, "moha_peer_stalls_total", map[string]string{"peer": "b"}); got != 1 {
		t.Fatalf("stalls counted %v, want 1", got)
	}
}

// TestPeerBrokerDownIsBuffered (issue 14 §2): a peer that reports its
// broker down (BROKER frame) is treated as down for outcomes at once — what
// it holds and what comes next is Buffered, with no stall to wait out — and
// still gets the messages, to republish once its broker is back; when it
// reports up, outcomes follow its acks again.
func TestPeerBrokerDownIsBuffered(t *testing.T) {
	held := &heldAcks{}
	recB := held.recorder()
	slow := func(c *Config) { c.StallAfter = time.Hour } // a Buffered outcome cannot be a stall's
	a, b := pair(t, slow, slow, newRecorder(), recB)
	out := newOutcomes(t)
	for i := range 3 {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "b holds 3", func() bool { return held.count() == 3 })
	if n := out.count(Buffered) + out.count(Acked); n != 0 {
		t.Fatalf("%d outcomes before b reported anything, want none (b acks nothing)", n)
	}
	b.SetBrokerUp(false)
	waitFor(t, 5*time.Second, "a to see b's broker down", func() bool { return a.peerStatus("b").BrokerDown })
	waitFor(t, 5*time.Second, "what b held reported Buffered", func() bool { return out.count(Buffered) == 3 })
	for i := 3; i < 6; i++ {
		if err := a.Send(context.Background(), "b", indexed(i), out.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "new messages Buffered at once", func() bool { return out.count(Buffered) == 6 })
	waitFor(t, 5*time.Second, "b still receives them", func() bool { return held.count() == 6 })
	if got := metric(t, a.reg, "moha_peer_broker_down", map[string]string{"peer": "b"}); got != 1 {
		t.Fatalf("moha_peer_broker_down = %v, want 1", got)
	}

	b.SetBrokerUp(true)
	waitFor(t, 5*time.Second, "a to see b's broker up", func() bool { return !a.peerStatus("b").BrokerDown })
	held.ackAll()
	if err := a.Send(context.Background(), "b", indexed(6), out.done(6)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b holds the 7th", func() bool { return held.count() == 7 })
	held.ack(6)
	waitFor(t, 5*time.Second, "the 7th Acked", func() bool { return out.count(Acked) == 1 })
	if out.count(Buffered) != 6 || out.count(Dropped) != 0 {
		t.Fatalf("outcomes: %d buffered, %d dropped; want 6 and 0", out.count(Buffered), out.count(Dropped))
	}
}

// TestLastHeard: a linked peer was heard within a heartbeat or so; once it
// is gone (its link down), LastHeard is zero, and an unknown peer's too.
func TestLastHeard(t *testing.T) {
	a, b := pair(t, func(c *Config) { c.Heartbeat = 100 * time.Millisecond }, func(c *Config) { c.Heartbeat = 100 * time.Millisecond }, newRecorder(), newRecorder())
	waitFor(t, 5*time.Second, "a frame from b within 300 ms", func() bool {
		h := a.LastHeard("b")
		return !h.IsZero() && time.Since(h) < 300*time.Millisecond
	})
	if !a.LastHeard("nobody").IsZero() {
		t.Fatal("an unknown peer was heard")
	}
	b.stop(t)
	waitFor(t, 5*time.Second, "a to see b's link down", func() bool { return a.LastHeard("b").IsZero() })
}
